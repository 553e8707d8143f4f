"""Backward rules reach every rectifier call and leave the forward values untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import ARCHITECTURES, bundle
from torch import nn

import xai_widgets as xw
from xai_widgets import rules
from xai_widgets.trace import INPUT, Trace


class Activations(nn.Module):
    """One linear map per stage, then an activation written in one of many ways."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x.flatten(1)[:, :6])
        if self.how == "tensor_method":
            h = h.relu()
        elif self.how == "inplace_then_reuse_input":
            F.relu(h, inplace=True)  # the result is not used: only the in-place change is
        elif self.how == "hardtanh":
            h = F.hardtanh(h, -0.5, 0.5)
        elif self.how == "gelu":
            h = F.gelu(h)
        elif self.how == "leaky_positional_inplace":
            h = F.leaky_relu(h, 0.1, True)
        return self.b(h)


def local_derivative(how: str, pre: torch.Tensor) -> torch.Tensor:
    leaf = pre.detach().requires_grad_()
    activation = {"tensor_method": torch.relu, "inplace_then_reuse_input": torch.relu,
                  "hardtanh": lambda t: F.hardtanh(t, -0.5, 0.5), "gelu": F.gelu,
                  "leaky_positional_inplace": lambda t: F.leaky_relu(t, 0.1)}[how]
    with torch.enable_grad():
        (derivative,) = torch.autograd.grad(activation(leaf).sum(), leaf)
    return derivative


@pytest.mark.parametrize("how", ["tensor_method", "inplace_then_reuse_input", "hardtanh",
                                 "gelu", "leaky_positional_inplace"])
@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
def test_rule_on_every_way_of_writing_an_activation(how: str, rule: rules.Rule) -> None:
    model = Activations(how).eval()
    x = torch.randn(2, 3, 4, 4)
    b = bundle(model, size=4)
    plain = Trace(b, x, "gradient")
    ruled = Trace(b, x, rule)
    torch.testing.assert_close(ruled.logits, plain.logits)  # forward values untouched
    targets = (0, 2)
    got = ruled.gradient(targets, INPUT)
    # by hand: back through b, the rule at the activation, back through a
    with torch.no_grad():
        pre = model.a(x.flatten(1)[:, :6])
        incoming = model.b.weight[list(targets)]
        if rule == "guided":
            passed = local_derivative(how, pre) * incoming.clamp(min=0)
        else:
            passed = incoming.clamp(min=0)
        expected = torch.zeros_like(x).flatten(1)
        expected[:, :6] = passed @ model.a.weight
    torch.testing.assert_close(got.flatten(1), expected)


def test_no_rectifier_warns_and_equals_the_gradient() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.randn(1, 3, 8, 8)
    with pytest.warns(xw.RuleWarning, match="no rectifier"):
        guided = xw.explain(bundle(model, size=8), x, "guided_backprop", target=1)
    plain = xw.explain(bundle(model, size=8), x, "saliency", target=1)
    torch.testing.assert_close(guided.map, plain.map)


@pytest.mark.parametrize("kind", list(ARCHITECTURES))
def test_guided_differs_from_the_gradient_wherever_there_are_rectifiers(kind: str) -> None:
    model = ARCHITECTURES[kind]().eval()
    x = torch.randn(2, 3, 16, 16)
    guided = xw.explain(bundle(model), x, "guided_backprop", target=[0, 1]).map
    plain = xw.explain(bundle(model), x, "saliency", target=[0, 1]).map
    assert not torch.allclose(guided, plain, atol=1e-6)


def test_mode_is_gone_after_an_error() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch.relu(x)
            raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"), rules.applied("guided"):
        Broken()(torch.randn(2))
    assert torch._C._len_torch_function_stack() == 0
