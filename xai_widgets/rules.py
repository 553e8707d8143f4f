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
``"excitation"`` excitation backprop (Zhang et al. 2016): the backward signal is the
                marginal winning probability; convolutions, linear layers, batch norm,
                pooling and residual additions are intercepted too (see the section below).
``"contrastive_excitation"`` the same with c-EB's contrastive top layer.
"""

from __future__ import annotations

import functools
import inspect
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.nn import grad as nn_grad
from torch.overrides import TorchFunctionMode

from .errors import RuleWarning

Rule = Literal["gradient", "guided", "deconvnet", "excitation", "contrastive_excitation"]
RULES: tuple[Rule, ...] = ("gradient", "guided", "deconvnet", "excitation",
                           "contrastive_excitation")

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
        if ctx.rule in _EXCITATION:  # the mass passes through rectifiers unchanged
            return grad, None, None, None, None
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
        none = (None,) * (2 + len(ctx.extra))
        if ctx.rule in _EXCITATION:  # the mass passes through activations unchanged
            return (grad, *none)
        positive = grad.clamp(min=0)
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


# ---------------------------------------------------------------------------- excitation backprop
#
# Excitation backprop (Zhang, Bargal, Lin, Brandt, Shen, Sclaroff, "Top-down Neural Attention
# by Excitation Backprop", ECCV 2016, arXiv:1608.00507) propagates a probability mass, the
# marginal winning probability (MWP), from the target unit down: a unit passes its mass to its
# inputs in proportion to their excitatory contributions, ``P(a_j) = Σ_i a_j w⁺_ji /
# (Σ_j' a_j' w⁺_j'i) · P(a_i)`` (biases ignored). Under the rules below the backward signal *is*
# the mass: the seed at the target logit is 1, and every tensor's "gradient" is its MWP.
#
# Contributions ``x_j w_ij`` of an affine op (conv, linear, folded batch norm) are split by
# sign: ``P_i = Σ_j (x_j w_ij)⁺`` and ``N_i = Σ_j (x_j w_ij)⁻``. A unit whose output is ≥ 0
# distributes its mass over its positive contributions (for ``x ≥ 0``, the paper's rule
# exactly: ``x_j w⁺_ij / P_i``); a unit whose output is < 0 (possible only without a rectifier,
# e.g. the linear bottlenecks of MobileNet/EfficientNet, or the image itself) over its negative
# ones. Both shares are ≥ 0 and sum to 1, so maps are non-negative and mass is conserved from
# layer to layer (lost only at a unit with no contribution of its sign). The top op (the last
# conv/linear of the forward pass, which makes the logits) always uses the positive
# contributions; under "contrastive_excitation" it returns the positive minus the negative
# shares instead, which is c-EB's ``MWP(o) − MWP(ō)`` (ō: the dual unit with negated weights),
# propagated below by the same rules because they are linear in the signal.
#
# Batch norm in eval mode is folded into the conv/linear op that feeds it (weights ``s·W``)
# and otherwise passes the mass through; rectifiers and other elementwise activations,
# max pooling (the winner takes all: autograd's own routing), reshapes and concatenation pass
# it through; average pooling and means are positive linear ops; a residual addition ``a + b``
# splits the mass in proportion to the parts of the sign of the sum; a product by a
# broadcast gate (squeeze-and-excitation) gives all the mass to the gated signal.

_EXCITATION = ("excitation", "contrastive_excitation")
_CONVOLUTIONS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_LINEAR_ARGS = ("input", "weight", "bias")
_POOLS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
          F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, torch.mean, torch.Tensor.mean}
_ADDS = {torch.add, torch.Tensor.add, torch.Tensor.add_}
_MULS = {torch.mul, torch.Tensor.mul}


class _Unit:
    """What the backward of one affine op needs to know that its forward could not: the
    batch norm folded into it, the sign of its (folded) output, whether it is the top op."""

    __slots__ = ("positive", "rule", "scale", "top")

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.scale: torch.Tensor | None = None
        self.positive: torch.Tensor | None = None
        self.top = False


def _divide(numerator: torch.Tensor, denominator: torch.Tensor,
            where: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` where ``where``, else 0 (no inf or NaN anywhere)."""
    safe = torch.where(where, denominator, torch.ones_like(denominator))
    return torch.where(where, numerator / safe, torch.zeros_like(numerator))


class _ExciteAffine(torch.autograd.Function):
    """Convolution or linear layer (``op(x, W) + b``) with the excitation backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                op: Callable[..., torch.Tensor], options: dict[str, Any],
                unit: _Unit) -> torch.Tensor:
        y = op(x, weight, bias, **options)
        unit.positive = y >= 0
        ctx.save_for_backward(x, weight)
        ctx.op, ctx.options, ctx.unit = op, options, unit
        return y

    @staticmethod
    def backward(ctx: Any, mass: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        unit: _Unit = ctx.unit
        if unit.scale is not None:
            weight = weight * unit.scale.to(weight.dtype).view(-1, *([1] * (weight.ndim - 1)))
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
        x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
        signed = bool((x < 0).any())

        def forward(inputs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return ctx.op(inputs, w, None, **ctx.options)

        def vjp(w: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
            return _input_vjp(ctx.op, ctx.options, x, w, signal)

        positive = forward(x_pos, w_pos) + (forward(x_neg, w_neg) if signed else 0)
        if unit.top:
            s_pos = _divide(mass, positive, positive > 0)
            need_negative = unit.rule == "contrastive_excitation"
        else:
            assert unit.positive is not None
            s_pos = _divide(mass, positive, unit.positive & (positive > 0))
            need_negative = bool(((~unit.positive) & (mass != 0)).any())
        grad = x_pos * vjp(w_pos, s_pos) + (x_neg * vjp(w_neg, s_pos) if signed else 0)
        if need_negative:
            negative = forward(x_pos, w_neg) + (forward(x_neg, w_pos) if signed else 0)
            if unit.top:  # contrastive: minus the normalised negative contributions
                s_neg = -_divide(mass, negative, negative < 0)
            else:
                assert unit.positive is not None
                s_neg = _divide(mass, negative, (~unit.positive) & (negative < 0))
            grad = grad + x_pos * vjp(w_neg, s_neg)
            if signed:
                grad = grad + x_neg * vjp(w_pos, s_neg)
        return grad, None, None, None, None, None


def _input_vjp(op: Callable[..., torch.Tensor], options: dict[str, Any], x: torch.Tensor,
               weight: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """``(∂ op(x, W) / ∂x)ᵀ signal``: ``op`` is linear in ``x``."""
    if op is F.linear:
        return signal @ weight
    dims = _CONVOLUTIONS.get(op)
    if dims is not None and not isinstance(options.get("padding", 0), str):
        input_vjp = (nn_grad.conv1d_input, nn_grad.conv2d_input, nn_grad.conv3d_input)[dims - 1]
        return input_vjp(x.shape, weight, signal, options.get("stride", 1),
                         options.get("padding", 0), options.get("dilation", 1),
                         options.get("groups", 1))
    with torch.enable_grad():
        leaf = torch.zeros_like(x, requires_grad=True)
        (grad,) = torch.autograd.grad(op(leaf, weight, None, **options), leaf, signal)
    return grad


class _ExcitePool(torch.autograd.Function):
    """A linear op with non-negative weights (average pooling, mean) with the excitation
    backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]
                ) -> torch.Tensor:
        y = fn(x)
        ctx.save_for_backward(x, y >= 0)
        ctx.fn = fn
        return y

    @staticmethod
    def backward(ctx: Any, mass: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, positive_out = ctx.saved_tensors
        with torch.enable_grad():
            leaf = torch.zeros_like(x, requires_grad=True)
            pooled = ctx.fn(leaf)
        x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
        positive = ctx.fn(x_pos)
        signal = _divide(mass, positive, positive_out & (positive > 0))
        negative_out = ~positive_out
        if bool((negative_out & (mass != 0)).any()):
            negative = ctx.fn(x_neg)
            signal_neg = _divide(mass, negative, negative_out & (negative < 0))
            (up, up_neg) = torch.autograd.grad(pooled, leaf, torch.stack([signal, signal_neg]),
                                               is_grads_batched=True)[0]
            return x_pos * up + x_neg * up_neg, None
        (up,) = torch.autograd.grad(pooled, leaf, signal)
        return x_pos * up, None


class _ExciteAdd(torch.autograd.Function):
    """``a + b`` (same shape; in place for ``+=``): the mass of each sum goes to the parts of
    its sign, in proportion."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor, in_place: bool) -> torch.Tensor:
        a_pos, b_pos = a.clamp(min=0), b.clamp(min=0)
        a_neg, b_neg = a.clamp(max=0), b.clamp(max=0)
        total = a + b
        positive = total >= 0
        denominator = torch.where(positive, a_pos + b_pos, a_neg + b_neg)
        share = torch.where(positive, a_pos, a_neg)
        fraction = _divide(share, denominator, denominator != 0)
        fraction = torch.where(denominator != 0, fraction, torch.full_like(fraction, 0.5))
        ctx.save_for_backward(fraction)
        if in_place:
            ctx.mark_dirty(a)
            return a.add_(b)
        return total

    @staticmethod
    def backward(ctx: Any, mass: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (fraction,) = ctx.saved_tensors
        return mass * fraction, mass * (1 - fraction), None


class _ExciteGate(torch.autograd.Function):
    """``signal * gate`` with the gate broadcast (squeeze-and-excitation): all the mass goes
    to the signal, none to the gate's branch."""

    @staticmethod
    def forward(ctx: Any, signal: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return signal * gate

    @staticmethod
    def backward(ctx: Any, mass: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return mass, None


class _PassThrough(torch.autograd.Function):
    """An elementwise op (batch norm) that passes the mass through unchanged."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]
                ) -> torch.Tensor:
        return fn(x)

    @staticmethod
    def backward(ctx: Any, mass: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return mass, None


def _differentiable(x: Any) -> bool:
    """An activation of the traced graph (not a parameter or a constant)."""
    return isinstance(x, torch.Tensor) and x.grad_fn is not None and torch.is_grad_enabled()


class _ExcitationMode(_RuleMode):
    """The activation rules of :class:`_RuleMode`, plus the ops excitation backprop rewrites."""

    def __init__(self, rule: Rule) -> None:
        super().__init__(rule)
        self.units: list[_Unit] = []
        self._outputs: dict[int, tuple[weakref.ref[torch.Tensor], _Unit]] = {}

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _CONVOLUTIONS or func is F.linear:
            names = _LINEAR_ARGS if func is F.linear else _CONV_ARGS
            values = {**dict(zip(names, args, strict=False)), **kwargs}
            x = values.pop("input")
            if isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled():
                weight, bias = values.pop("weight"), values.pop("bias", None)
                unit = _Unit(self.rule)
                self.units.append(unit)
                y = _ExciteAffine.apply(x, weight, bias, func, values, unit)
                self._outputs[id(y)] = (weakref.ref(y), unit)
                return y
        elif func is F.batch_norm and args and _differentiable(args[0]):
            return self._batch_norm(args, kwargs)
        elif func in _POOLS and args and _differentiable(args[0]):
            x, *rest = args
            return _ExcitePool.apply(x, lambda t: func(t, *rest, **kwargs))
        elif func in _ADDS and len(args) == 2 and not kwargs and _differentiable(args[0]) \
                and _differentiable(args[1]) and args[0].shape == args[1].shape:
            return _ExciteAdd.apply(args[0], args[1], func is torch.Tensor.add_)
        elif func in _MULS and len(args) == 2 and not kwargs and _differentiable(args[0]) \
                and _differentiable(args[1]) and args[0].shape != args[1].shape:
            big, small = args if args[0].numel() >= args[1].numel() else args[::-1]
            if torch.broadcast_shapes(big.shape, small.shape) == big.shape:
                return _ExciteGate.apply(big, small)
        return super().__torch_function__(func, types, args, kwargs)

    def _batch_norm(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        names = ("input", "running_mean", "running_var", "weight", "bias", "training",
                 "momentum", "eps")
        values = {**dict(zip(names, args, strict=False)), **kwargs}
        x = values["input"]
        y = _PassThrough.apply(x, lambda t: F.batch_norm(t, *args[1:], **kwargs))
        entry = self._outputs.pop(id(x), None)
        mean, var = values.get("running_mean"), values.get("running_var")
        if entry is not None and entry[0]() is x and not values.get("training", False) \
                and mean is not None and var is not None:
            unit = entry[1]
            scale = (var + values.get("eps", 1e-5)).rsqrt()
            weight = values.get("weight")
            unit.scale = (scale if weight is None else scale * weight).detach()
            unit.positive = y >= 0
        return y


@contextmanager
def applied(rule: Rule) -> Iterator[None]:
    """Run the body (one forward pass) under ``rule``; warn if the rule found nothing to act on."""
    if rule == "gradient":
        yield
        return
    if rule in _EXCITATION:
        excitation = _ExcitationMode(rule)
        with excitation:
            yield
        if excitation.units:
            excitation.units[-1].top = True  # the op that makes the logits
        else:
            warnings.warn(f"the {rule} rule found no convolution or linear layer in the "
                          "forward pass; the map is the plain gradient", RuleWarning,
                          stacklevel=3)
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
