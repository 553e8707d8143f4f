"""SmoothGrad / SmoothGrad² / VarGrad: the NumPy reference (with its noise handed in),
identities, seeds, batching and chunking, wrapping integrated gradients, errors."""

from __future__ import annotations

import pytest
import torch
from support import load_reference, reference_nets
from tiny_models import ARCHITECTURES, bundle

import xai_widgets as xw
from xai_widgets.kernels import smoothgrad

REFERENCE = load_reference("smoothgrad")
SAMPLES = len(REFERENCE["noise"])


def tiny() -> tuple[torch.nn.Module, torch.Tensor, list[int]]:
    net = reference_nets.tiny_net(REFERENCE)
    return net, torch.tensor(REFERENCE["input"], dtype=torch.float32), \
        REFERENCE["targets"].tolist()


@pytest.mark.parametrize("base", ["saliency", "input_x_gradient", "guided_backprop"])
@pytest.mark.parametrize("aggregate", ["mean", "square", "variance"])
def test_matches_numpy_reference(base: str, aggregate: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    noise = torch.tensor(REFERENCE["noise"], dtype=torch.float32)
    monkeypatch.setattr(smoothgrad, "noise", lambda sample, *_: noise[sample])
    net, x, targets = tiny()
    e = xw.explain(bundle(net, size=8), x, "smoothgrad", target=targets, base=base,
                   aggregate=aggregate, n_samples=SAMPLES, noise_level=0.2, chunk_size=5)
    expected = torch.tensor(REFERENCE[f"{base}:{aggregate}"], dtype=torch.float32)
    torch.testing.assert_close(e.map, expected, rtol=1e-4,
                               atol=1e-5 * float(expected.abs().max()))


def test_no_noise_gives_the_base_map() -> None:
    net, x, targets = tiny()
    b = bundle(net, size=8)
    plain = xw.explain(b, x, "saliency", target=targets).map
    smooth = xw.explain(b, x, "smoothgrad", target=targets, noise_level=0.0, n_samples=3)
    torch.testing.assert_close(smooth.map, plain)
    square = xw.explain(b, x, "smoothgrad", target=targets, noise_level=0.0, n_samples=3,
                        aggregate="square")
    torch.testing.assert_close(square.map, plain ** 2)
    variance = xw.explain(b, x, "smoothgrad", target=targets, noise_level=0.0, n_samples=3,
                          aggregate="variance")
    assert variance.map.abs().max() < 1e-12


def test_seed_batch_and_chunks() -> None:
    b = bundle(ARCHITECTURES["relu6"]().eval())
    x = torch.randn(3, 3, 16, 16)
    params = {"n_samples": 5, "base": "guided_backprop", "seed": 11}
    together = xw.explain(b, x, "smoothgrad", target=[0, 2, 4], chunk_size=4, **params)
    again = xw.explain(b, x, "smoothgrad", target=[0, 2, 4], chunk_size=15, **params)
    torch.testing.assert_close(together.map, again.map, rtol=1e-5, atol=1e-8)
    other = xw.explain(b, x, "smoothgrad", target=[0, 2, 4], **{**params, "seed": 12})
    assert not torch.allclose(together.map, other.map)
    for i, t in enumerate([0, 2, 4]):
        alone = xw.explain(b, x[i:i + 1], "smoothgrad", target=t, chunk_size=2, **params)
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-5, atol=1e-8)


def test_wraps_integrated_gradients_with_its_parameters() -> None:
    b = bundle(ARCHITECTURES["plain"]().eval())
    x = torch.randn(2, 3, 16, 16)
    e = xw.explain(b, x, "smoothgrad", target=[1, 2], base="integrated_gradients",
                   n_samples=2, noise_level=0.0, base_steps=4)
    ig = xw.explain(b, x, "integrated_gradients", target=[1, 2], n_steps=4)
    torch.testing.assert_close(e.map, ig.map, rtol=1e-5, atol=1e-8)
    assert e.extras["base"] == "integrated_gradients"


def test_progress_reports_every_chunk() -> None:
    b = bundle(ARCHITECTURES["plain"]().eval())
    seen: list[float] = []
    xw.explain(b, torch.randn(2, 3, 16, 16), "smoothgrad", n_samples=3, chunk_size=4,
               progress=lambda fraction, preview: seen.append(fraction))
    assert seen == pytest.approx([4 / 6, 1.0])


def test_bad_parameters_raise_clear_errors() -> None:
    net, x, _targets = tiny()
    b = bundle(net, size=8)
    with pytest.raises(xw.ParameterError, match="'noise_level' must lie in"):
        xw.explain(b, x, "smoothgrad", noise_level=-0.1)
    with pytest.raises(xw.ParameterError, match="'n_samples' must lie in"):
        xw.explain(b, x, "smoothgrad", n_samples=0)
    with pytest.raises(xw.ParameterError, match="'base' must be one of"):
        xw.explain(b, x, "smoothgrad", base="grad_cam")
    with pytest.raises(xw.ParameterError, match="'base_steps' must lie in"):
        xw.explain(b, x, "smoothgrad", base="integrated_gradients", base_steps=0)
