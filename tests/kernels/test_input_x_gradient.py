"""Input × gradient: = input · saliency, Euler's identity on positively homogeneous networks,
the NumPy reference, batching."""

from __future__ import annotations

import pytest
import torch
from support import load_reference, reference_nets
from tiny_models import InplaceResNet, LinearNet, VggNet, bundle, randomise_batchnorm

import xai_widgets as xw

REFERENCE = load_reference("input_x_gradient")


def zero_biases(net: torch.nn.Module) -> torch.nn.Module:
    """Zero every conv/linear bias (fresh BatchNorms are the identity in eval mode): the
    network becomes positively homogeneous of degree 1."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module.bias is not None:
                module.bias.zero_()
    return net


def test_equals_input_times_saliency() -> None:
    net = randomise_batchnorm(InplaceResNet().eval())
    b = bundle(net)
    x = torch.randn(2, 3, 16, 16)
    product = xw.explain(b, x, "input_x_gradient", target=[1, 3]).map
    gradient = xw.explain(b, x, "saliency", target=[1, 3]).map
    torch.testing.assert_close(product, x * gradient, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("variant", ["module", "inplace", "functional"])
def test_matches_numpy_reference(variant: str) -> None:
    net = reference_nets.tiny_net(REFERENCE, variant)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    e = xw.explain(bundle(net, size=8), x, "input_x_gradient",
                   target=REFERENCE["targets"].tolist())
    expected = torch.tensor(REFERENCE["map"], dtype=torch.float32)
    torch.testing.assert_close(e.map, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("variant", ["module", "inplace", "functional"])
def test_euler_identity_on_bias_free_tiny_net(variant: str) -> None:
    arrays = {k.removesuffix(":bias_free"): v for k, v in REFERENCE.items()
              if not k.endswith(".bias")}
    net = reference_nets.tiny_net(arrays, variant)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    e = xw.explain(bundle(net, size=8), x, "input_x_gradient",
                   target=REFERENCE["targets"].tolist())
    torch.testing.assert_close(e.map, torch.tensor(REFERENCE["map:bias_free"],
                                                   dtype=torch.float32), rtol=1e-4, atol=1e-7)
    logits = torch.tensor(REFERENCE["logits:bias_free"], dtype=torch.float32)
    torch.testing.assert_close(e.map.sum(dim=(1, 2, 3)), logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [InplaceResNet, VggNet])
def test_euler_identity_on_homogeneous_networks(make) -> None:
    # bias-free ReLU networks (with residual additions, reused in-place ReLUs, max-pooling):
    # f(t x) = t f(x) for t > 0, so Σ x ∂f/∂x = f(x)
    net = zero_biases(make().eval())
    x = torch.randn(3, 3, 16, 16)
    targets = [0, 2, 4]
    e = xw.explain(bundle(net), x, "input_x_gradient", target=targets)
    logits = e.logits[torch.arange(3), targets]
    assert logits.abs().min() > 1e-4
    torch.testing.assert_close(e.map.sum(dim=(1, 2, 3)), logits, rtol=1e-4, atol=1e-6)


def test_euler_identity_fails_with_biases() -> None:
    # the identity above is not a tautology of the kernel: biases break it
    net = reference_nets.tiny_net(REFERENCE, "module")
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    targets = REFERENCE["targets"].tolist()
    e = xw.explain(bundle(net, size=8), x, "input_x_gradient", target=targets)
    logits = e.logits[torch.arange(2), targets]
    assert ((e.map.sum(dim=(1, 2, 3)) - logits).abs() > 1e-2).all()


def test_affine_model_sums_to_the_logit_minus_its_bias() -> None:
    net = LinearNet(classes=5, size=8).eval()
    x = torch.randn(2, 3, 8, 8)
    e = xw.explain(bundle(net, size=8), x, "input_x_gradient", target=[0, 3])
    bias = net.fc.bias.detach()[[0, 3]]
    torch.testing.assert_close(e.map.sum(dim=(1, 2, 3)),
                               e.logits[torch.arange(2), [0, 3]] - bias, rtol=1e-5, atol=1e-5)


def test_batch_equals_one_by_one() -> None:
    net = randomise_batchnorm(InplaceResNet().eval())
    b = bundle(net)
    x = torch.randn(3, 3, 16, 16)
    together = xw.explain(b, x, "input_x_gradient", target=[0, 4, 2])
    for i, t in enumerate([0, 4, 2]):
        alone = xw.explain(b, x[i:i + 1], "input_x_gradient", target=t)
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-5, atol=1e-8)
