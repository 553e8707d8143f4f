"""DESIGN rule 2: after any call, successful or raising, the user's model and data are
exactly as before: parameters, gradients, buffers, train/eval modes, requires_grad flags,
hooks, modules, and no torch function mode left active."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch
from tiny_models import ARCHITECTURES, bundle
from torch import nn

import xai_widgets as xw
from xai_widgets.kernels import REGISTRY

#: cheap parameters for iterative methods, so that the contract runs fast
QUICK: dict[str, dict[str, Any]] = {
    "integrated_gradients": {"n_steps": 3, "chunk_size": 4},
    "layer_integrated_gradients": {"n_steps": 3, "chunk_size": 4, "path": "layer"},
    "smoothgrad": {"n_samples": 3, "chunk_size": 4},
    "rise": {"n_masks": 6, "chunk_size": 4},
    "score_cam": {"chunk_size": 4},
    "feature_inversion": {"iterations": 3, "step1_iterations": 1},
    "inverted_representation": {"iterations": 3},
    "layerwise_inverse": {"max_iterations": 3},
}


def snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "parameters": {n: (p.detach().clone(), p.requires_grad,
                           None if p.grad is None else p.grad.clone())
                       for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "modules": {n: (m, type(m), m.training) for n, m in model.named_modules()},
        "hooks": {n: tuple(len(getattr(m, a)) for a in (
            "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
            "_state_dict_hooks", "_load_state_dict_pre_hooks"))
            for n, m in model.named_modules()},
    }


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["modules"].keys() == after["modules"].keys()
    for name, (module, kind, training) in before["modules"].items():
        assert after["modules"][name][0] is module
        assert after["modules"][name][1:] == (kind, training), name
    assert before["hooks"] == after["hooks"]
    for name, (value, requires_grad, grad) in before["parameters"].items():
        new_value, new_requires_grad, new_grad = after["parameters"][name]
        assert torch.equal(value, new_value), name
        assert requires_grad == new_requires_grad, name
        assert (grad is None) == (new_grad is None), name
        assert grad is None or torch.equal(grad, new_grad), name
    for name, value in before["buffers"].items():
        assert torch.equal(value, after["buffers"][name]), name
    assert torch._C._len_torch_function_stack() == 0


def user_model(kind: str) -> nn.Module:
    """A model as a user may leave it: in train mode, one frozen parameter, a stale grad,
    non-trivial BatchNorm statistics."""
    model = ARCHITECTURES[kind]()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    parameters = list(model.parameters())
    parameters[0].requires_grad_(False)
    parameters[-1].grad = torch.full_like(parameters[-1], 0.25)
    return model.train()


class Failing(nn.Module):
    """Raises in the middle of its forward pass, after the inner model ran."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        self.calls += 1
        if self.calls > 1:  # the first call is the layer catalogue's dry run
            raise RuntimeError("user model failed")
        return out


@pytest.mark.parametrize("kind", list(ARCHITECTURES))
@pytest.mark.parametrize("method", list(REGISTRY))
def test_model_and_input_unchanged(method: str, kind: str) -> None:
    model = user_model(kind)
    x = torch.randn(2, 3, 16, 16)
    x_before = x.clone()
    before = snapshot(model)
    # an XaiError (CAM on a head without global pooling) must leave nothing changed either
    with contextlib.suppress(xw.XaiError):
        xw.explain(bundle(model), x, method, target=[1, 2], **QUICK.get(method, {}))
    assert_same(before, snapshot(model))
    assert torch.equal(x, x_before)


@pytest.mark.parametrize("method", list(REGISTRY))
def test_unchanged_when_the_model_raises(method: str) -> None:
    model = Failing(user_model("inplace_resnet"))
    before = snapshot(model)
    with pytest.raises(xw.ModelError, match="user model failed"):  # its own words, wrapped
        xw.explain(bundle(model), torch.randn(1, 3, 16, 16), method, **QUICK.get(method, {}))
    assert_same(before, snapshot(model))


@pytest.mark.parametrize("method", ["cam", "grad_cam"])
def test_unchanged_after_bad_input(method: str) -> None:
    model = user_model("plain")
    before = snapshot(model)
    with pytest.raises(xw.TargetError):
        xw.explain(bundle(model), torch.randn(1, 3, 16, 16), method, target=99)
    with pytest.raises(xw.LayerError):
        xw.explain(bundle(model), torch.randn(1, 3, 16, 16), "grad_cam", layer="nope")
    assert_same(before, snapshot(model))
