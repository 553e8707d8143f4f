"""Backward rules, applied to one traced forward pass as a context manager.

A rule changes how the backward pass goes through the network's rectifiers; the forward
values stay exactly those of the model. Rules are applied with a ``TorchFunctionMode`` that
intercepts every activation *call* during the forward pass (``nn.ReLU`` modules, in-place
and reused ones, ``F.relu`` called in a ``forward``, ``Tensor.relu``, ReLU6/Hardtanh,
Hardswish, GELU, SiLU, ...) and routes it through an autograd function with the rule's
backward. Nothing is monkey-patched and no module is swapped; the mode is scoped to the
forward pass of one trace.

``"gradient"``  the ordinary gradient (no interception at all).
``"guided"``    guided backpropagation (Springenberg et al. 2015): at every rectifier the
                signal is the local derivative times the positive part of the incoming
                signal, ``R_in = σ'(x) · [R_out]_+`` (for ReLU ``1[x > 0] · [R_out]_+``).
``"deconvnet"`` DeconvNet (Zeiler & Fergus 2014): ``R_in = [R_out]_+``, the forward
                activation is ignored.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .errors import RuleWarning

Rule = Literal["gradient", "guided", "deconvnet"]
RULES: tuple[Rule, ...] = ("gradient", "guided", "deconvnet")

_RELU = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}
_ALWAYS_IN_PLACE = {F.relu_, torch.relu_, torch.Tensor.relu_, F.hardtanh_}
_HARDTANH = {F.hardtanh, F.hardtanh_, F.relu6}
_SMOOTH = {F.gelu, F.silu, F.hardswish, F.elu, F.selu, F.celu, F.leaky_relu, F.mish,
           F.softplus, F.prelu, F.rrelu}


_INF = float("inf")


class _RectifiedLinear(torch.autograd.Function):
    """Clamp to ``[low, high]`` (ReLU: ``[0, inf]``) with a rule's backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, low: float, high: float, in_place: bool,
                rule: str) -> torch.Tensor:
        is_relu = (low, high) == (0.0, _INF)
        if in_place:
            ctx.mark_dirty(x)
            y = x.relu_() if is_relu else x.clamp_(low, high)
        else:
            y = torch.relu(x) if is_relu else x.clamp(low, high)
        ctx.save_for_backward(y)
        ctx.bounds, ctx.rule = (low, high), rule
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.rule == "deconvnet":
            return grad.clamp(min=0), None, None, None, None
        (y,) = ctx.saved_tensors
        low, high = ctx.bounds
        if (low, high) == (0.0, _INF):
            passed = torch.ops.aten.threshold_backward(grad, y, 0)
        else:
            passed = torch.where((y > low) & (y < high), grad, 0)
        return passed.relu_(), None, None, None, None


class _Smooth(torch.autograd.Function):
    """Any elementwise activation ``fn`` with a rule's backward (local derivative by autograd)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Callable[..., torch.Tensor], rule: str,
                *extra: Any) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.fn, ctx.rule, ctx.extra = fn, rule, extra
        return fn(x, *extra)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        positive = grad.clamp(min=0)
        none = (None,) * (2 + len(ctx.extra))
        if ctx.rule == "deconvnet":
            return (positive, *none)
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            (local,) = torch.autograd.grad(ctx.fn(leaf, *ctx.extra), leaf, positive)
        return (local, *none)


_RELU_ARGS = ("input", "inplace")
_HARDTANH_ARGS = ("input", "min_val", "max_val", "inplace")


class _RuleMode(TorchFunctionMode):
    """Routes every activation call through the rule; counts what it routed."""

    def __init__(self, rule: Rule) -> None:
        super().__init__()
        self.rule = rule
        self.routed = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _RELU or func in _HARDTANH:
            self.routed += 1
            return self._rectified(func, args, kwargs)
        if func in _SMOOTH and args and isinstance(args[0], torch.Tensor):
            self.routed += 1
            x, *extra = args
            options = {k: v for k, v in kwargs.items() if k != "inplace"}
            names = _parameters(func)
            if names and len(extra) == len(names) and names[-1] == "inplace":
                extra.pop()  # inplace given by position: the rule computes out of place
            return _Smooth.apply(x, _with_options(func, options), self.rule, *extra)
        return func(*args, **kwargs)

    def _rectified(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        names = _HARDTANH_ARGS if func in (F.hardtanh, F.hardtanh_) else _RELU_ARGS
        values = {**dict(zip(names, args, strict=False)), **kwargs}
        in_place = func in _ALWAYS_IN_PLACE or bool(values.get("inplace", False))
        if func is F.relu6:
            low, high = 0.0, 6.0
        elif func in _HARDTANH:
            low, high = float(values.get("min_val", -1.0)), float(values.get("max_val", 1.0))
        else:
            low, high = 0.0, _INF
        return _RectifiedLinear.apply(values["input"], low, high, in_place, self.rule)


@functools.cache
def _parameters(func: Callable[..., Any]) -> tuple[str, ...]:
    """Names of the arguments after the input (empty for builtins without a signature)."""
    try:
        return tuple(inspect.signature(func).parameters)[1:]
    except (TypeError, ValueError):
        return ()


def _with_options(func: Callable[..., torch.Tensor],
                  options: dict[str, Any]) -> Callable[..., torch.Tensor]:
    def call(x: torch.Tensor, *extra: Any) -> torch.Tensor:
        return func(x, *extra, **options)

    return call


@contextmanager
def applied(rule: Rule) -> Iterator[None]:
    """Run the body (one forward pass) under ``rule``; warn if the rule found nothing to act on."""
    if rule == "gradient":
        yield
        return
    mode = _RuleMode(rule)
    with mode:
        yield
    if mode.routed == 0:
        warnings.warn(
            f"the {rule} rule found no rectifier (ReLU, ReLU6, Hardswish, GELU, SiLU, ...) in "
            "the forward pass, so it equals the plain gradient here; an activation written "
            "as arithmetic (e.g. x.clamp(min=0)) cannot be recognised",
            RuleWarning, stacklevel=3,
        )
