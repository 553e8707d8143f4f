"""Guided backprop: hand values, the no-rectifier warning, the NumPy reference on in-place,
reused and functional ReLUs, ReLU6/Hardswish and residual blocks against independent
implementations, batching."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from support import load_reference, reference_nets
from tiny_models import InplaceResNet, OneConv, OneConvRelu, Relu6Net, bundle, randomise_batchnorm
from torch import nn

import xai_widgets as xw

REFERENCE = load_reference("guided_backprop")


def test_one_conv_relu_by_hand() -> None:
    weight = [[2.0, -1.0], [0.5, 3.0]]
    x = torch.randn(1, 3, 4, 4)
    for c in (0, 1):
        e = xw.explain(bundle(OneConvRelu(weight), size=4), x, "guided_backprop", target=c)
        expected = torch.zeros(3, 4, 4)
        for k in (0, 1):
            expected[k] = max(weight[c][k], 0.0) * (x[0, k] > 0) / 16
        torch.testing.assert_close(e.map[0], expected, rtol=1e-6, atol=1e-8)


def test_without_a_rectifier_warns_and_equals_the_gradient() -> None:
    b = bundle(OneConv([[2.0, -1.0], [0.5, 3.0]]), size=4)
    x = torch.randn(2, 3, 4, 4)
    with pytest.warns(xw.RuleWarning, match="no rectifier"):
        guided = xw.explain(b, x, "guided_backprop", target=[0, 1]).map
    plain = xw.explain(b, x, "saliency", target=[0, 1]).map
    torch.testing.assert_close(guided, plain, rtol=0, atol=0)
    assert (plain < 0).any()  # negative signals would have been cut by a rectifier rule


@pytest.mark.parametrize("variant", ["module", "inplace", "functional"])
def test_matches_numpy_reference(variant: str) -> None:
    net = reference_nets.tiny_net(REFERENCE, variant)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", xw.RuleWarning)  # every ReLU call was found
        e = xw.explain(bundle(net, size=8), x, "guided_backprop",
                       target=REFERENCE["targets"].tolist())
    expected = torch.tensor(REFERENCE["map"], dtype=torch.float32)
    torch.testing.assert_close(e.map, expected, rtol=1e-4, atol=1e-7)
    gradient = torch.tensor(REFERENCE["gradient"], dtype=torch.float32)
    assert (e.map - gradient).abs().max() > 0.1 * gradient.abs().max()


# ----------------------------------------------------------------- ReLU6 + Hardswish by hand


def relu6_net_backward(net: Relu6Net, x: torch.Tensor, targets: list[int],
                       guided: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Relu6Net's input signal, layer by layer with explicit formulas (no autograd graph):
    conv -> BatchNorm -> ReLU6 -> conv -> Hardswish -> mean -> (dropout) -> linear.
    ``guided``: at ReLU6 and Hardswish pass ``σ'(z) · [R]_+`` instead of ``σ'(z) · R``.
    Also returns the pre-activations of ReLU6 and Hardswish."""
    conv0, bn, _, conv1, _ = net.features
    linear = net.classifier[1]
    rule = (lambda r: r.clamp(min=0)) if guided else (lambda r: r)
    with torch.no_grad():
        z0 = F.conv2d(x, conv0.weight, conv0.bias, padding=1)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        b = (z0 - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None]
        r = b.clamp(0, 6)
        z1 = F.conv2d(r, conv1.weight, conv1.bias, stride=2, padding=1)
        cells = z1.shape[2] * z1.shape[3]
        g_h = (linear.weight[targets] / cells)[:, :, None, None].expand_as(z1)
        hardswish_slope = torch.where(z1 < -3, 0.0, torch.where(z1 <= 3, z1 / 3 + 0.5, 1.0))
        g_z1 = hardswish_slope * rule(g_h)
        g_r = torch.nn.grad.conv2d_input(r.shape, conv1.weight, g_z1, stride=2, padding=1)
        g_b = ((b > 0) & (b < 6)) * rule(g_r)
        g_z0 = g_b * scale[:, None, None]
        g_x = torch.nn.grad.conv2d_input(x.shape, conv0.weight, g_z0, padding=1)
    return g_x, b, z1


def test_relu6_hardswish_matches_a_layer_by_layer_implementation() -> None:
    net = randomise_batchnorm(Relu6Net().eval())
    with torch.no_grad():
        net.features[1].weight.mul_(4)  # push BatchNorm outputs past ReLU6's upper bound
    x = torch.randn(2, 3, 16, 16)
    targets = [1, 3]
    expected, before_relu6, before_hardswish = relu6_net_backward(net, x, targets, guided=True)
    # the input reaches every regime of both activations
    assert (before_relu6 < 0).any()
    assert (before_relu6 > 6).any()
    assert ((before_hardswish > -3) & (before_hardswish < 3)).any()
    assert ((before_hardswish < -3) | (before_hardswish > 3)).any()

    b = bundle(net)
    guided = xw.explain(b, x, "guided_backprop", target=targets).map
    torch.testing.assert_close(guided, expected, rtol=1e-4, atol=1e-7)
    # the same hand backward without the rule is the gradient: it checks the helper itself
    plain, _, _ = relu6_net_backward(net, x, targets, guided=False)
    gradient = xw.explain(b, x, "saliency", target=targets).map
    torch.testing.assert_close(gradient, plain, rtol=1e-4, atol=1e-7)
    assert (guided - gradient).abs().max() > 0.1 * gradient.abs().max()


# ------------------------------------------------- residual blocks: ReLU modules swapped out


class _GuidedReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = x.clamp(min=0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad.clamp(min=0) * (y > 0)


class _GuidedReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GuidedReLUFunction.apply(x)


def guided_by_module_swap(net: nn.Module, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
    """Guided backprop of a copy of ``net`` whose ReLU modules (each call of a reused one
    included) are replaced by an out-of-place guided ReLU: independent of xai_widgets."""
    twin = copy.deepcopy(net)
    for parent in list(twin.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, _GuidedReLU())
    inputs = x.clone().requires_grad_(True)
    logits = twin(inputs)
    (grad,) = torch.autograd.grad(logits[torch.arange(len(targets)), targets].sum(), inputs)
    return grad


def test_residual_blocks_with_a_reused_in_place_relu() -> None:
    net = randomise_batchnorm(InplaceResNet().eval())
    x = torch.randn(2, 3, 16, 16)
    guided = xw.explain(bundle(net), x, "guided_backprop", target=[0, 4]).map
    expected = guided_by_module_swap(net, x, [0, 4])
    torch.testing.assert_close(guided, expected, rtol=1e-4, atol=1e-7)
    assert all(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))  # untouched
    inputs = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(net(inputs)[torch.arange(2), [0, 4]].sum(), inputs)
    assert (guided - plain).abs().max() > 0.1 * plain.abs().max()


def test_batch_equals_one_by_one() -> None:
    net = randomise_batchnorm(InplaceResNet().eval())
    b = bundle(net)
    x = torch.randn(3, 3, 16, 16)
    together = xw.explain(b, x, "guided_backprop", target=[0, 4, 2])
    for i, t in enumerate([0, 4, 2]):
        alone = xw.explain(b, x[i:i + 1], "guided_backprop", target=t)
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-5, atol=1e-8)
