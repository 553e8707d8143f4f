"""Score-CAM: the NumPy reference, the top-K cap, batching and chunks, the number of forward
passes, the embedded model."""

from __future__ import annotations

import pytest
import torch
from support import load_reference, reference_nets
from tiny_models import ARCHITECTURES, bundle

import xai_widgets as xw

REFERENCE = load_reference("score_cam")


@pytest.mark.parametrize("layer", ["features.1", "features.3"])
@pytest.mark.parametrize("score", ["probability", "logit"])
def test_matches_numpy_reference(layer: str, score: str) -> None:
    net = reference_nets.tiny_net(REFERENCE)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    e = xw.explain(bundle(net, size=8), x, "score_cam", target=REFERENCE["targets"].tolist(),
                   layer=layer, score=score, chunk_size=5)
    suffix = layer if score == "probability" else f"logit:{layer}"
    for got, key in ((e.map, "map"), (e.extras["channel_weights"], "weights")):
        expected = torch.tensor(REFERENCE[f"{key}:{suffix}"], dtype=torch.float32)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def count_rows(model: torch.nn.Module) -> list[int]:
    rows: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: rows.append(len(args[0])))
    return rows


def test_top_k_cap_and_forward_count() -> None:
    net = ARCHITECTURES["plain"]().eval()
    b = bundle(net)
    x = torch.randn(2, 3, 16, 16)
    full = xw.explain(b, x, "score_cam", target=[1, 2])
    everything = xw.explain(b, x, "score_cam", target=[1, 2], max_channels=8)
    torch.testing.assert_close(full.map, everything.map)
    rows = count_rows(net)
    capped = xw.explain(b, x, "score_cam", target=[1, 2], max_channels=3, chunk_size=4)
    assert sum(rows) == 2 + 2 * 3  # one forward of the batch, then 3 masked inputs per image
    weights = capped.extras["channel_weights"]
    assert ((weights != 0).sum(dim=1) == 3).all()
    kept = weights != 0
    torch.testing.assert_close(weights[kept], full.extras["channel_weights"][kept])


def test_batch_and_chunks_do_not_change_the_result() -> None:
    b = bundle(ARCHITECTURES["inplace_resnet"]().eval())
    x = torch.randn(3, 3, 16, 16)
    together = xw.explain(b, x, "score_cam", target=[0, 2, 4], chunk_size=5)
    chunked = xw.explain(b, x, "score_cam", target=[0, 2, 4], chunk_size=64)
    torch.testing.assert_close(together.map, chunked.map, rtol=1e-5, atol=1e-7)
    for i, t in enumerate([0, 2, 4]):
        alone = xw.explain(b, x[i:i + 1], "score_cam", target=t, chunk_size=3)
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-5, atol=1e-7)


def test_embedded_efficientnet(embedded, photos) -> None:
    seen: list[float] = []
    e = xw.explain(embedded, photos["chelsea"], "score_cam", target="tabby", layer="blocks.5",
                   max_channels=12, progress=lambda fraction, preview: seen.append(fraction))
    assert e.map.shape == (1, 7, 7)
    assert torch.isfinite(e.map).all()
    assert int(e.extras["channels_used"]) == 12
    assert seen[-1] == 1.0


def test_bad_parameters() -> None:
    b = bundle(ARCHITECTURES["plain"]().eval())
    with pytest.raises(xw.ParameterError, match="'max_channels' must lie in"):
        xw.explain(b, torch.randn(1, 3, 16, 16), "score_cam", max_channels=-1)
    with pytest.raises(xw.ParameterError, match="'chunk_size' must lie in"):
        xw.explain(b, torch.randn(1, 3, 16, 16), "score_cam", chunk_size=0)
