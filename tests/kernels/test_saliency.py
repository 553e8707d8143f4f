"""Saliency: the weights of a linear model, hand values, the NumPy reference, the cache
(no accumulation across classes, partial backwards from cached layers), batching."""

from __future__ import annotations

import pytest
import torch
from support import load_reference, reference_nets
from tiny_models import (
    InplaceResNet,
    LinearNet,
    Mlp,
    OneConv,
    OneConvRelu,
    bundle,
    randomise_batchnorm,
)

import xai_widgets as xw
from xai_widgets.kernels import grad_cam, saliency
from xai_widgets.kernels.spec import KernelContext
from xai_widgets.trace import TraceSet

REFERENCE = load_reference("saliency")


def test_linear_model_gives_its_weights_whatever_the_input() -> None:
    net = LinearNet(classes=5, size=8).eval()
    mix = net.mix.weight.detach()[:, :, 0, 0]  # (out k, in i)
    weight = net.fc.weight.detach().reshape(5, 3, 8, 8)
    for x in (torch.randn(2, 3, 8, 8), 10 * torch.rand(2, 3, 8, 8)):
        e = xw.explain(bundle(net, size=8), x, "saliency", target=[1, 4])
        expected = torch.einsum("nkhw,ki->nihw", weight[[1, 4]], mix)
        torch.testing.assert_close(e.map, expected, rtol=1e-5, atol=1e-7)


def test_one_conv_by_hand() -> None:
    weight = [[2.0, -1.0], [0.5, 3.0]]
    x = torch.randn(1, 3, 4, 4)
    for c in (0, 1):
        e = xw.explain(bundle(OneConv(weight), size=4), x, "saliency", target=c)
        expected = torch.zeros(3, 4, 4)
        expected[0], expected[1] = weight[c][0] / 16, weight[c][1] / 16
        torch.testing.assert_close(e.map[0], expected, rtol=1e-6, atol=1e-8)


def test_one_conv_relu_by_hand() -> None:
    weight = [[2.0, -1.0], [0.5, 3.0]]
    x = torch.randn(1, 3, 4, 4)
    e = xw.explain(bundle(OneConvRelu(weight), size=4), x, "saliency", target=0)
    expected = torch.zeros(3, 4, 4)
    expected[0] = 2.0 * (x[0, 0] > 0) / 16
    expected[1] = -1.0 * (x[0, 1] > 0) / 16
    torch.testing.assert_close(e.map[0], expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("variant", ["module", "inplace", "functional"])
def test_matches_numpy_reference(variant: str) -> None:
    net = reference_nets.tiny_net(REFERENCE, variant)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    e = xw.explain(bundle(net, size=8), x, "saliency", target=REFERENCE["targets"].tolist())
    expected = torch.tensor(REFERENCE["map"], dtype=torch.float32)
    torch.testing.assert_close(e.map, expected, rtol=1e-4, atol=1e-7)


def test_classes_do_not_accumulate_on_one_trace() -> None:
    # the original project never zeroed the input's .grad between classes
    net = randomise_batchnorm(InplaceResNet().eval())
    b = bundle(net)
    x = torch.randn(2, 3, 16, 16)
    traces = TraceSet(b, x)
    first = saliency.compute(KernelContext(traces, (1, 1), None, {})).map
    second = saliency.compute(KernelContext(traces, (3, 3), None, {})).map
    fresh = xw.explain(b, x, "saliency", target=3).map
    torch.testing.assert_close(second, fresh, rtol=1e-5, atol=1e-8)
    assert (first - second).abs().max() > 0.1 * fresh.abs().max()
    assert traces.forward_passes == 1


@pytest.mark.parametrize("layer", ["stem", "layer1.bn1", "layer1", "layer2.conv1", "layer2"])
def test_after_grad_cam_on_the_same_trace(layer: str) -> None:
    # the backward to the input may start from Grad-CAM's cached gradient at `layer`
    net = randomise_batchnorm(InplaceResNet().eval())
    b = bundle(net)
    x = torch.randn(2, 3, 16, 16)
    traces = TraceSet(b, x, [layer])
    grad_cam.compute(KernelContext(traces, (0, 2), layer, {}))
    after = saliency.compute(KernelContext(traces, (0, 2), None, {})).map
    fresh = xw.explain(b, x, "saliency", target=[0, 2]).map
    torch.testing.assert_close(after, fresh, rtol=1e-5, atol=1e-8)


def test_batch_equals_one_by_one() -> None:
    net = randomise_batchnorm(InplaceResNet().eval())
    b = bundle(net)
    x = torch.randn(3, 3, 16, 16)
    together = xw.explain(b, x, "saliency", target=[0, 4, 2])
    for i, t in enumerate([0, 4, 2]):
        alone = xw.explain(b, x[i:i + 1], "saliency", target=t)
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-5, atol=1e-8)


def test_model_without_a_spatial_layer() -> None:
    # the ModelError's own message says "gradient methods on the input may still apply"
    net = Mlp().eval()
    x = torch.randn(2, 3, 16, 16)
    e = xw.explain(bundle(net), x, "saliency", target=[1, 2])
    expected = net.net[1].weight.detach()[[1, 2]].reshape(2, 3, 16, 16)
    torch.testing.assert_close(e.map, expected)
