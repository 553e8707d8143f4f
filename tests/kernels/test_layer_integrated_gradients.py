"""Layer integrated gradients: the NumPy references of both paths, exact completeness on the
activation path, layers changed in place later, errors."""

from __future__ import annotations

import pytest
import torch
from support import load_reference, reference_nets
from tiny_models import ARCHITECTURES, bundle

import xai_widgets as xw

REFERENCE = load_reference("layer_integrated_gradients")


@pytest.mark.parametrize("path", ["input", "layer"])
@pytest.mark.parametrize("layer", ["features.1", "features.3"])
def test_matches_10000_step_reference(path: str, layer: str) -> None:
    net = reference_nets.tiny_net(REFERENCE)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    e = xw.explain(bundle(net, size=8), x, "layer_integrated_gradients",
                   target=REFERENCE["targets"].tolist(), layer=layer, path=path,
                   n_steps=10_000, chunk_size=10_000)
    expected = torch.tensor(REFERENCE[f"{path}:{layer}"], dtype=torch.float32)
    # float32 vs float64: a ReLU may switch at a neighbouring one of the 10,000 steps
    torch.testing.assert_close(e.map, expected, rtol=1e-3,
                               atol=1e-4 * float(expected.abs().max()))
    torch.testing.assert_close(e.extras["delta"], torch.tensor(REFERENCE["delta"]).float(),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["inplace_resnet", "functional_relu", "vgg"])
def test_activation_path_is_complete(kind: str) -> None:
    net = ARCHITECTURES[kind]().eval()
    b = bundle(net)
    x = torch.randn(2, 3, 16, 16)
    e = xw.explain(b, x, "layer_integrated_gradients", target=[1, 3], path="layer",
                   n_steps=256, quadrature="riemann_middle", chunk_size=512)
    scale = e.map.abs().flatten(1).sum(dim=1)
    assert (e.extras["completeness_error"].abs() <= 2e-3 * scale).all()


def test_mutated_layer_is_substituted_before_the_in_place_op() -> None:
    """``layer2.bn2`` is changed in place (``+= identity``, ReLU) after it returns."""
    net = ARCHITECTURES["inplace_resnet"]().eval()
    b = bundle(net)
    assert b.layers["layer2.bn2"].mutated_later
    x = torch.randn(1, 3, 16, 16)
    e = xw.explain(b, x, "layer_integrated_gradients", target=2, layer="layer2.bn2",
                   path="layer", n_steps=256, quadrature="riemann_middle", chunk_size=256)
    assert e.map.shape == (1, 8, 8)
    # completeness against f(x) − f(x | bn2 := bn2(x')), the skip path keeps x's features
    scale = float(e.map.abs().sum())
    assert abs(float(e.extras["completeness_error"])) <= 2e-3 * scale


def test_batch_equals_one_by_one() -> None:
    net = ARCHITECTURES["plain"]().eval()
    b = bundle(net)
    x = torch.randn(2, 3, 16, 16)
    for path in ("input", "layer"):
        together = xw.explain(b, x, "layer_integrated_gradients", target=[0, 4], path=path,
                              n_steps=4, chunk_size=3)
        for i, t in enumerate([0, 4]):
            alone = xw.explain(b, x[i:i + 1], "layer_integrated_gradients", target=t,
                               path=path, n_steps=4)
            torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-4,
                                       atol=1e-7)


def test_bad_parameters() -> None:
    b = bundle(ARCHITECTURES["plain"]().eval())
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(xw.ParameterError, match="'path' must be one of"):
        xw.explain(b, x, "layer_integrated_gradients", path="activation")
    with pytest.raises(xw.ParameterError, match="'n_steps' must lie in"):
        xw.explain(b, x, "layer_integrated_gradients", n_steps=0)
    with pytest.raises(xw.LayerError):
        xw.explain(b, x, "layer_integrated_gradients", layer="nope")
