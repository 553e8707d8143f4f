"""RISE: the masks and the saliency against the NumPy reference, determinism for a seed,
chunks and batches, progress, errors."""

from __future__ import annotations

import pytest
import torch
from support import load_reference, reference_nets
from tiny_models import ARCHITECTURES, bundle

import xai_widgets as xw
from xai_widgets.jobs import Cancelled
from xai_widgets.kernels import rise

REFERENCE = load_reference("rise")
COUNT = len(REFERENCE["masks"])


def reference_masks() -> rise.Masks:
    """Masks whose grids and shifts are the reference's."""
    masks = rise.Masks(2, 0.5, (8, 8), 0, torch.device("cpu"), torch.float32)
    grids = torch.tensor(REFERENCE["grids"]) > 0.5
    shifts = torch.tensor(REFERENCE["shifts"])
    masks.draw = lambda start, stop: (  # type: ignore[method-assign]
        grids[start:stop], shifts[start:stop, 0], shifts[start:stop, 1])
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
    a = rise.Masks(7, 0.3, (24, 20), 5, torch.device("cpu"), torch.float32)
    b = rise.Masks(7, 0.3, (24, 20), 5, torch.device("cpu"), torch.float32)
    c = rise.Masks(7, 0.3, (24, 20), 6, torch.device("cpu"), torch.float32)
    masks = a(0, 200)
    assert masks.shape == (200, 24, 20)
    assert torch.equal(masks, b(0, 200))
    assert not torch.equal(masks, c(0, 200))
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(float(masks.mean()) - 0.3) < 0.05
    assert torch.equal(torch.cat([a(0, 70), a(70, 200)]), masks)
    grids, shift_y, shift_x = a.draw(0, 200)
    assert set(torch.unique(grids).tolist()) == {False, True}
    assert set(shift_y.tolist()) == set(range(4)) and set(shift_x.tolist()) == set(range(3))


def test_masks_are_made_per_chunk_from_the_seed() -> None:
    # mask i depends on (seed, i) only: the millionth mask costs what the first does
    masks = rise.Masks(256, 0.5, (16, 16), 3, torch.device("cpu"), torch.float32)
    last = masks(999_990, 1_000_000)
    assert last.shape == (10, 16, 16)
    assert torch.equal(masks(999_995, 1_000_000), last[5:])
    assert not torch.equal(masks(0, 10), last)


def test_a_million_masks_start_at_once_with_memory_bounded_by_the_chunk() -> None:
    b = bundle(ARCHITECTURES["plain"]().eval())
    x = torch.randn(1, 3, 16, 16)
    seen: list[float] = []

    def stop_after_the_first_chunk(fraction: float, _preview: object) -> None:
        seen.append(fraction)
        raise Cancelled

    with pytest.raises(Cancelled):  # all grids at once would be 10⁶ × 256² floats: 262 GB
        xw.explain(b, x, "rise", n_masks=1_000_000, grid_size=256, chunk_size=4,
                   progress=stop_after_the_first_chunk)
    assert seen == [4 / 1_000_000]


def test_a_chunk_larger_than_memory_is_refused_with_one_that_fits() -> None:
    from xai_widgets.kernels._iterative import available_memory

    x = torch.randn(1, 3, 256, 256)
    needed = 100_000 * x[0].numel() * 4  # the masked inputs alone: 79 GB
    available = available_memory(torch.device("cpu"))
    if available is None or available > needed:
        pytest.skip("this machine does not report its memory, or has more than the test needs")
    b = bundle(ARCHITECTURES["plain"]().eval(), size=256)
    with pytest.raises(xw.ParameterError, match=r"chunk_size=100000 needs at least .* GB.*"
                                                r"use chunk_size=\d+ or less"):
        xw.explain(b, x, "rise", n_masks=100_000, chunk_size=100_000)


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
