"""Guided Grad-CAM: hand values, = guided backprop ⊙ up(relu(Grad-CAM)) with an independent
bilinear resize, the NumPy reference, batching."""

from __future__ import annotations

import pytest
import torch
from support import load_reference, reference_nets
from tiny_models import InplaceResNet, OneConvRelu, bundle, randomise_batchnorm

import xai_widgets as xw

REFERENCE = load_reference("guided_grad_cam")
# (variant, our layer name) -> the layer of the NumPy reference with the same tensor
LAYERS = [
    ("module", "features.0", "features.0"), ("module", "features.1", "features.1"),
    ("module", "features.2", "features.2"), ("module", "features.3", "features.3"),
    ("inplace", "features.0", "features.0"), ("inplace", "features.2", "features.2"),
    ("inplace", "features", "features.3"),
    ("functional", "features.0", "features.0"), ("functional", "features.1", "features.1"),
    ("functional", "features", "features.2"),
]


def test_one_conv_relu_by_hand() -> None:
    # at the ReLU layer: Grad-CAM = Σ_k W[c, k] relu(x_k) / hw,
    # guided backprop = relu(W[c, k]) 1[x_k > 0] / hw
    weight = [[2.0, -1.0], [0.5, 3.0]]
    x = torch.randn(1, 3, 4, 4)
    for c in (0, 1):
        e = xw.explain(bundle(OneConvRelu(weight), size=4), x, "guided_grad_cam", target=c,
                       layer="relu")
        cam = (weight[c][0] * x[0, 0].relu() + weight[c][1] * x[0, 1].relu()) / 16
        expected = torch.zeros(3, 4, 4)
        for k in (0, 1):
            expected[k] = max(weight[c][k], 0.0) * (x[0, k] > 0) / 16 * cam.relu()
        torch.testing.assert_close(e.map[0], expected, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(e.extras["grad_cam"][0], cam.relu(), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(("variant", "layer", "reference_layer"), LAYERS)
def test_matches_numpy_reference(variant: str, layer: str, reference_layer: str) -> None:
    net = reference_nets.tiny_net(REFERENCE, variant)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    targets = REFERENCE["targets"].tolist()
    e = xw.explain(bundle(net, size=8), x, "guided_grad_cam", target=targets, layer=layer)
    expected = torch.tensor(REFERENCE[f"map:{reference_layer}"], dtype=torch.float32)
    cam = torch.tensor(REFERENCE[f"grad_cam:{reference_layer}"], dtype=torch.float32)
    torch.testing.assert_close(e.map, expected, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(e.extras["grad_cam"], cam, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layer", ["stem", "layer1.bn2", "layer2"])
def test_equals_guided_backprop_times_upsampled_rectified_grad_cam(layer: str) -> None:
    net = randomise_batchnorm(InplaceResNet().eval())
    b = bundle(net)
    x = torch.randn(2, 3, 16, 16)
    targets = [1, 3]
    combined = xw.explain(b, x, "guided_grad_cam", target=targets, layer=layer).map
    guided = xw.explain(b, x, "guided_backprop", target=targets).map
    cam = xw.explain(b, x, "grad_cam", target=targets, layer=layer).map
    assert cam.shape[-1] < 16  # the layer is coarser than the input: the resize matters
    assert (cam < 0).any()  # and so does the ReLU
    up = reference_nets.np_bilinear(cam.clamp(min=0).double().numpy(), (16, 16))
    expected = guided * torch.tensor(up, dtype=torch.float32)[:, None]
    torch.testing.assert_close(combined, expected, rtol=1e-4, atol=1e-8)


def test_batch_equals_one_by_one() -> None:
    net = randomise_batchnorm(InplaceResNet().eval())
    b = bundle(net)
    x = torch.randn(3, 3, 16, 16)
    together = xw.explain(b, x, "guided_grad_cam", target=[0, 4, 2], layer="layer1")
    for i, t in enumerate([0, 4, 2]):
        alone = xw.explain(b, x[i:i + 1], "guided_grad_cam", target=t, layer="layer1")
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-4, atol=1e-8)
