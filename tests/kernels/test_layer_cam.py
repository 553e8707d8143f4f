"""LayerCAM: hand values, the identity with Grad-CAM, the NumPy reference, batching."""

from __future__ import annotations

import pytest
import torch
from support import load_reference, reference_nets
from tiny_models import InplaceResNet, OneConv, bundle, randomise_batchnorm

import xai_widgets as xw

REFERENCE = load_reference("layer_cam")
# (variant, our layer name) -> the layer of the NumPy reference with the same tensor
LAYERS = [
    ("module", "features.0", "features.0"), ("module", "features.1", "features.1"),
    ("module", "features.2", "features.2"), ("module", "features.3", "features.3"),
    ("inplace", "features.0", "features.0"), ("inplace", "features.2", "features.2"),
    ("inplace", "features", "features.3"),
    ("functional", "features.0", "features.0"), ("functional", "features.1", "features.1"),
    ("functional", "features", "features.2"),
]


def test_one_conv_by_hand() -> None:
    # the gradient at `conv` is W[c, k] / hw on channel k: only positive class weights count
    weight = [[2.0, -1.0], [-0.5, 3.0]]
    p, q = torch.randn(4, 4), torch.randn(4, 4)
    x = torch.stack([p, q, torch.randn(4, 4)])[None]
    for c in (0, 1):
        e = xw.explain(bundle(OneConv(weight), size=4), x, "layer_cam", target=c, layer="conv")
        expected = (max(weight[c][0], 0) * p + max(weight[c][1], 0) * q) / 16
        torch.testing.assert_close(e.map[0], expected, rtol=1e-6, atol=1e-7)


def test_equals_grad_cam_when_the_gradient_is_constant_and_positive() -> None:
    # all-positive, spatially constant gradients: Σ_k relu(g_k) A_k = Σ_k mean(g_k) A_k
    b = bundle(OneConv([[2.0, 0.5], [0.25, 3.0]]), size=4)
    x = torch.randn(2, 3, 4, 4)
    layer_cam = xw.explain(b, x, "layer_cam", target=[0, 1], layer="conv")
    grad_cam = xw.explain(b, x, "grad_cam", target=[0, 1], layer="conv")
    torch.testing.assert_close(layer_cam.map, grad_cam.map, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("variant", "layer", "reference_layer"), LAYERS)
def test_matches_numpy_reference(variant: str, layer: str, reference_layer: str) -> None:
    net = reference_nets.tiny_net(REFERENCE, variant)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    targets = REFERENCE["targets"].tolist()
    e = xw.explain(bundle(net, size=8), x, "layer_cam", target=targets, layer=layer)
    expected = torch.tensor(REFERENCE[f"map:{reference_layer}"], dtype=torch.float32)
    torch.testing.assert_close(e.map, expected, rtol=1e-4, atol=1e-6)


def test_cell_by_cell_weights_differ_from_grad_cam_at_an_early_layer() -> None:
    net = reference_nets.tiny_net(REFERENCE, "module")
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    b = bundle(net, size=8)
    layer_cam = xw.explain(b, x, "layer_cam", target=[1, 3], layer="features.1").map
    grad_cam = xw.explain(b, x, "grad_cam", target=[1, 3], layer="features.1").map
    assert (layer_cam - grad_cam).abs().max() > 0.1 * grad_cam.abs().max()
    # post-ReLU activations times positive gradients: never negative
    assert layer_cam.min() >= 0


def test_batch_equals_one_by_one() -> None:
    net = randomise_batchnorm(InplaceResNet().eval())
    b = bundle(net)
    x = torch.randn(3, 3, 16, 16)
    together = xw.explain(b, x, "layer_cam", target=[0, 4, 2], layer="layer1.conv2")
    for i, t in enumerate([0, 4, 2]):
        alone = xw.explain(b, x[i:i + 1], "layer_cam", target=t, layer="layer1.conv2")
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-4, atol=1e-6)
