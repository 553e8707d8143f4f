"""RISE: the masks and the saliency against the NumPy reference, determinism for a seed,
chunks and batches, progress, errors."""

from __future__ import annotations

import pytest
import torch
from support import load_reference, reference_nets
from tiny_models import ARCHITECTURES, bundle

import xai_widgets as xw
from xai_widgets.kernels import rise

REFERENCE = load_reference("rise")
COUNT = len(REFERENCE["masks"])


def reference_masks() -> rise.Masks:
    masks = rise.Masks(COUNT, 2, 0.5, (8, 8), 0, torch.device("cpu"), torch.float32)
    masks.grids = torch.tensor(REFERENCE["grids"], dtype=torch.float32)
    masks.shift_y = torch.tensor(REFERENCE["shifts"][:, 0])
    masks.shift_x = torch.tensor(REFERENCE["shifts"][:, 1])
    return masks


def test_masks_match_the_numpy_construction() -> None:
    masks = reference_masks()
    expected = torch.tensor(REFERENCE["masks"], dtype=torch.float32)
    torch.testing.assert_close(masks(0, COUNT), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(masks(5, 9), expected[5:9], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("score", ["probability", "logit"])
def test_matches_numpy_reference(score: str, monkeypatch: pytest.MonkeyPatch) -> None:
    given = reference_masks()
    monkeypatch.setattr(rise, "Masks", lambda *args: given)
    net = reference_nets.tiny_net(REFERENCE)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    e = xw.explain(bundle(net, size=8), x, "rise", target=REFERENCE["targets"].tolist(),
                   n_masks=COUNT, grid_size=2, score=score, chunk_size=6)
    key = "map" if score == "probability" else "map:logit"
    expected = torch.tensor(REFERENCE[key], dtype=torch.float32)
    torch.testing.assert_close(e.map, expected, rtol=1e-5, atol=1e-6)


def test_masks_of_a_seed() -> None:
    a = rise.Masks(200, 7, 0.3, (24, 20), 5, torch.device("cpu"), torch.float32)
    b = rise.Masks(200, 7, 0.3, (24, 20), 5, torch.device("cpu"), torch.float32)
    c = rise.Masks(200, 7, 0.3, (24, 20), 6, torch.device("cpu"), torch.float32)
    masks = a(0, 200)
    assert masks.shape == (200, 24, 20)
    assert torch.equal(masks, b(0, 200))
    assert not torch.equal(masks, c(0, 200))
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(float(masks.mean()) - 0.3) < 0.05
    assert torch.equal(torch.cat([a(0, 70), a(70, 200)]), masks)


def test_deterministic_for_a_seed_and_independent_of_chunks_and_batch() -> None:
    b = bundle(ARCHITECTURES["inplace_resnet"]().eval())
    x = torch.randn(3, 3, 16, 16)
    params = {"n_masks": 24, "grid_size": 4, "seed": 3}
    first = xw.explain(b, x, "rise", target=[0, 1, 2], chunk_size=7, **params)
    again = xw.explain(b, x, "rise", target=[0, 1, 2], chunk_size=7, **params)
    assert torch.equal(first.map, again.map)
    chunked = xw.explain(b, x, "rise", target=[0, 1, 2], chunk_size=72, **params)
    torch.testing.assert_close(first.map, chunked.map, rtol=1e-5, atol=1e-7)
    other = xw.explain(b, x, "rise", target=[0, 1, 2], chunk_size=7, **{**params, "seed": 4})
    assert not torch.allclose(first.map, other.map)
    for i, t in enumerate([0, 1, 2]):
        alone = xw.explain(b, x[i:i + 1], "rise", target=t, chunk_size=5, **params)
        torch.testing.assert_close(first.map[i:i + 1], alone.map, rtol=1e-5, atol=1e-7)


def test_keeping_everything_gives_the_probability() -> None:
    net = reference_nets.tiny_net(REFERENCE)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    targets = REFERENCE["targets"].tolist()
    e = xw.explain(bundle(net, size=8), x, "rise", target=targets, n_masks=3,
                   keep_probability=1.0)
    p = e.probabilities[torch.arange(2), targets]
    torch.testing.assert_close(e.map, p.view(2, 1, 1).expand(2, 8, 8))


def test_progress_and_errors() -> None:
    b = bundle(ARCHITECTURES["plain"]().eval())
    x = torch.randn(2, 3, 16, 16)
    seen: list[float] = []
    xw.explain(b, x, "rise", n_masks=10, chunk_size=8,
               progress=lambda fraction, preview: seen.append(fraction))
    assert seen == pytest.approx([0.4, 0.8, 1.0])  # 4 masks × 2 images per chunk
    with pytest.raises(xw.ParameterError, match="'n_masks' must lie in"):
        xw.explain(b, x, "rise", n_masks=0)
    with pytest.raises(xw.ParameterError, match="'keep_probability' must lie in"):
        xw.explain(b, x, "rise", keep_probability=1.5)
    with pytest.raises(xw.ParameterError, match="keep_probability must be positive"):
        xw.explain(b, x, "rise", keep_probability=0.0)
