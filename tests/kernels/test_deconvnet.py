"""DeconvNet: hand values, the no-rectifier warning, the NumPy reference on in-place, reused
and functional ReLUs, independence from the input where there is no max-pooling, batching."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from support import load_reference, reference_nets
from tiny_models import (
    InplaceResNet,
    OneConv,
    OneConvRelu,
    Relu6Net,
    bundle,
    randomise_batchnorm,
)
from torch import nn

import xai_widgets as xw

REFERENCE = load_reference("deconvnet")


def test_one_conv_relu_by_hand() -> None:
    # the rectifier passes relu(W[c, k]) / hw back whatever the sign of its input was
    weight = [[2.0, -1.0], [0.5, 3.0]]
    x = torch.randn(1, 3, 4, 4)
    assert (x[0, :2] < 0).any()
    for c in (0, 1):
        e = xw.explain(bundle(OneConvRelu(weight), size=4), x, "deconvnet", target=c)
        expected = torch.zeros(3, 4, 4)
        for k in (0, 1):
            expected[k] = max(weight[c][k], 0.0) / 16
        torch.testing.assert_close(e.map[0], expected, rtol=1e-6, atol=1e-8)


def test_without_a_rectifier_warns_and_equals_the_gradient() -> None:
    b = bundle(OneConv([[2.0, -1.0], [0.5, 3.0]]), size=4)
    x = torch.randn(2, 3, 4, 4)
    with pytest.warns(xw.RuleWarning, match="no rectifier"):
        deconv = xw.explain(b, x, "deconvnet", target=[0, 1]).map
    plain = xw.explain(b, x, "saliency", target=[0, 1]).map
    torch.testing.assert_close(deconv, plain, rtol=0, atol=0)
    assert (plain < 0).any()


@pytest.mark.parametrize("variant", ["module", "inplace", "functional"])
def test_matches_numpy_reference(variant: str) -> None:
    net = reference_nets.tiny_net(REFERENCE, variant)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", xw.RuleWarning)
        e = xw.explain(bundle(net, size=8), x, "deconvnet",
                       target=REFERENCE["targets"].tolist())
    expected = torch.tensor(REFERENCE["map"], dtype=torch.float32)
    torch.testing.assert_close(e.map, expected, rtol=1e-4, atol=1e-7)
    guided = torch.tensor(REFERENCE["guided"], dtype=torch.float32)
    assert (e.map - guided).abs().max() > 0.1 * guided.abs().max()


def test_max_pooling_routes_by_the_forward_switches() -> None:
    # maxpool 2×2 -> ReLU -> GAP -> linear W: the signal relu(W[c, k]) / 4 of each pooled
    # cell goes back to the position of its window's maximum only
    net = nn.Sequential(nn.MaxPool2d(2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(3, 2, bias=False)).eval()
    with torch.no_grad():
        net[4].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [-1.0, 3.0, 2.0]]))
    x = torch.randn(2, 3, 4, 4)
    e = xw.explain(bundle(net, size=4), x, "deconvnet", target=[0, 1])
    window_max = F.interpolate(F.max_pool2d(x, 2), scale_factor=2, mode="nearest")
    signal = net[4].weight.detach()[[0, 1]].clamp(min=0) / 4
    torch.testing.assert_close(e.map, (x == window_max) * signal[:, :, None, None],
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("variant", ["module", "inplace", "functional"])
def test_ignores_the_input_without_max_pooling(variant: str) -> None:
    # every rectifier ignores its forward input, convolutions are linear: same map for any x
    net = reference_nets.tiny_net(REFERENCE, variant)
    b = bundle(net, size=8)
    x = torch.randn(3, 3, 8, 8)
    e = xw.explain(b, x, "deconvnet", target=[2, 2, 2])
    torch.testing.assert_close(e.map[1:], e.map[:1].expand(2, -1, -1, -1), rtol=1e-5,
                               atol=1e-8)
    gradient = xw.explain(b, x, "saliency", target=[2, 2, 2]).map
    assert (gradient[1] - gradient[0]).abs().max() > 0.1 * gradient.abs().max()


def test_relu6_and_hardswish_pass_the_positive_part() -> None:
    # Relu6Net by hand: conv -> BatchNorm -> ReLU6 -> conv -> Hardswish -> mean -> linear,
    # where both activations pass [R]_+ back whatever their input
    net = randomise_batchnorm(Relu6Net().eval())
    conv0, bn, _, conv1, _ = net.features
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        cells = 8 * 8
        g_h = (net.classifier[1].weight[[1, 3]] / cells)[:, :, None, None].expand(2, 8, 8, 8)
        g_r = torch.nn.grad.conv2d_input((2, 8, 16, 16), conv1.weight, g_h.clamp(min=0),
                                         stride=2, padding=1)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        g_z0 = g_r.clamp(min=0) * scale[:, None, None]
        expected = torch.nn.grad.conv2d_input(x.shape, conv0.weight, g_z0, padding=1)
    e = xw.explain(bundle(net), x, "deconvnet", target=[1, 3])
    torch.testing.assert_close(e.map, expected, rtol=1e-4, atol=1e-7)
    guided = xw.explain(bundle(net), x, "guided_backprop", target=[1, 3]).map
    assert (e.map - guided).abs().max() > 0.1 * guided.abs().max()


def test_batch_equals_one_by_one() -> None:
    net = randomise_batchnorm(InplaceResNet().eval())
    b = bundle(net)
    x = torch.randn(3, 3, 16, 16)
    together = xw.explain(b, x, "deconvnet", target=[0, 4, 2])
    for i, t in enumerate([0, 4, 2]):
        alone = xw.explain(b, x[i:i + 1], "deconvnet", target=t)
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-5, atol=1e-8)
