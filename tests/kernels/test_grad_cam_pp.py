"""Grad-CAM++: closed forms where the gradient is constant, the NumPy reference, batching."""

from __future__ import annotations

import pytest
import torch
from support import load_reference, reference_nets
from tiny_models import InplaceResNet, OneConv, bundle, randomise_batchnorm

import xai_widgets as xw

REFERENCE = load_reference("grad_cam_pp")
# (variant, our layer name) -> the layer of the NumPy reference with the same tensor
LAYERS = [
    ("module", "features.0", "features.0"), ("module", "features.1", "features.1"),
    ("module", "features.2", "features.2"), ("module", "features.3", "features.3"),
    ("inplace", "features.0", "features.0"), ("inplace", "features.2", "features.2"),
    ("inplace", "features", "features.3"),
    ("functional", "features.0", "features.0"), ("functional", "features.1", "features.1"),
    ("functional", "features", "features.2"),
]


def closed_form_weights(class_weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ weights where ``∂y_c/∂A_k = W[c, k] / hw`` everywhere (a GAP head):
    ``α = 1 / (2 + W[c, k] · mean(A_k))`` and ``w_k = relu(W[c, k]) / (2 + W[c, k] mean(A_k))``."""
    return class_weights.clamp(min=0) / (2 + class_weights * activations.mean(dim=(2, 3)))


def test_one_conv_by_hand() -> None:
    weight = [[2.0, -1.0], [0.5, 3.0]]
    p, q = torch.rand(4, 4), torch.rand(4, 4)
    x = torch.stack([p, q, torch.rand(4, 4)])[None]
    for c in (0, 1):
        e = xw.explain(bundle(OneConv(weight), size=4), x, "grad_cam_pp", target=c,
                       layer="conv")
        w = [max(weight[c][k], 0.0) / (2 + weight[c][k] * float(a.mean()))
             for k, a in enumerate((p, q))]
        torch.testing.assert_close(e.extras["channel_weights"][0], torch.tensor(w),
                                   rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(e.map[0], w[0] * p + w[1] * q, rtol=1e-5, atol=1e-6)
        if c == 0:  # a negative class weight drops its channel entirely (unlike Grad-CAM)
            assert e.extras["channel_weights"][0, 1] == 0


def test_zero_gradient_gives_zero_weight_not_nan() -> None:
    # W[0, 0] = 0: g = 0 on channel P, the formula's 0/0 must give weight 0
    x = torch.rand(1, 3, 4, 4)
    e = xw.explain(bundle(OneConv([[0.0, 1.0]]), size=4), x, "grad_cam_pp", target=0,
                   layer="conv")
    assert torch.isfinite(e.map).all()
    assert e.extras["channel_weights"][0, 0] == 0
    torch.testing.assert_close(e.map[0], x[0, 1] / (2 + float(x[0, 1].mean())),
                               rtol=1e-5, atol=1e-6)


def test_closed_form_at_the_pooled_layer_of_a_gap_head() -> None:
    net = randomise_batchnorm(InplaceResNet().eval())
    x = torch.randn(2, 3, 16, 16)
    e = xw.explain(bundle(net), x, "grad_cam_pp", target=[1, 3], layer="layer2")
    with torch.no_grad():
        activations = net.layer2(net.layer1(net.stem(x)))
    w = closed_form_weights(net.fc.weight.detach()[[1, 3]], activations)
    torch.testing.assert_close(e.extras["channel_weights"], w, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(e.map, torch.einsum("nk,nkhw->nhw", w, activations),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("variant", "layer", "reference_layer"), LAYERS)
def test_matches_numpy_reference(variant: str, layer: str, reference_layer: str) -> None:
    net = reference_nets.tiny_net(REFERENCE, variant)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    targets = REFERENCE["targets"].tolist()
    e = xw.explain(bundle(net, size=8), x, "grad_cam_pp", target=targets, layer=layer)
    weights = torch.tensor(REFERENCE[f"weights:{reference_layer}"], dtype=torch.float32)
    expected = torch.tensor(REFERENCE[f"map:{reference_layer}"], dtype=torch.float32)
    torch.testing.assert_close(e.extras["channel_weights"], weights, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(e.map, expected, rtol=1e-4, atol=1e-5)


def test_differs_from_grad_cam() -> None:
    # not a renamed Grad-CAM: the weights are not proportional to the mean gradient
    net = reference_nets.tiny_net(REFERENCE, "module")
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    b = bundle(net, size=8)
    pp = xw.explain(b, x, "grad_cam_pp", target=[1, 3], layer="features.1").map
    plain = xw.explain(b, x, "grad_cam", target=[1, 3], layer="features.1").map
    cosine = torch.nn.functional.cosine_similarity(pp.flatten(1), plain.flatten(1))
    assert (cosine < 0.99).all()


def test_batch_equals_one_by_one() -> None:
    net = randomise_batchnorm(InplaceResNet().eval())
    b = bundle(net)
    x = torch.randn(3, 3, 16, 16)
    together = xw.explain(b, x, "grad_cam_pp", target=[0, 4, 2], layer="layer1.bn1")
    for i, t in enumerate([0, 4, 2]):
        alone = xw.explain(b, x[i:i + 1], "grad_cam_pp", target=t, layer="layer1.bn1")
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-4, atol=1e-6)
