"""A sequential network as a chain of invertible units, captured from one forward pass.

The layer-wise inverse (Kwon et al. 2021) walks a network backwards one layer at a time, so
it needs the network as a chain: every operation takes the previous one's output and
nothing else. :func:`capture` runs the model once under a ``TorchFunctionMode`` that sees
every torch function call (module or functional: ``nn.ReLU``, ``F.relu(..., inplace=True)``,
``torch.flatten`` in a ``forward``, ``x.mean(dim=(2, 3))``) and records the operations
applied to the running tensor. A call that uses an *earlier* tensor of the chain (a residual
addition, a concatenation, a branch) or an operation without an inverse rule (ReLU6,
Hardswish, attention, ...) raises a :class:`~xai_widgets.errors.MethodError` that names it.

Operations are grouped into :class:`Unit` s, the layers of the inverse:

``block``     affine operations (convolution, linear, eval-mode batch norm, zero padding,
              with reshapes in between) and an optional ReLU after them;
``maxpool``   max pooling (plain or adaptive), inverted with the forward pass's switches;
``avgpool``   average pooling (plain, adaptive, ``mean`` over dimensions);
``relu``      a ReLU that follows no affine operation;
``reshape``   flatten / view / reshape (dropout in eval mode and other identities are
              dropped).

Each unit keeps the values of its input and output in the recorded pass and can be run on a
new batch (``unit(x)``), with the model's own parameters (detached: no graph through them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import MethodError
from ..scope import eval_mode, forward_hooks, model_lock

Kind = Literal["affine", "relu", "maxpool", "avgpool", "reshape", "identity"]
UnitKind = Literal["block", "maxpool", "avgpool", "relu", "reshape"]

_AFFINE = {"conv1d", "conv2d", "conv3d", "linear", "batch_norm", "pad"}
_RELU = {"relu", "relu_"}
_MAXPOOL = {"max_pool1d", "max_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d"}
_AVGPOOL = {"avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "mean"}
_RESHAPE = {"flatten", "view", "reshape"}
_IDENTITY = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
             "feature_alpha_dropout", "contiguous", "clone"}
SUPPORTED = ("convolution, linear, batch norm (eval), zero padding, ReLU, max pooling, average "
             "pooling, mean, flatten/view/reshape and dropout (eval)")


@dataclass
class Step:
    """One recorded operation on the running tensor."""

    kind: Kind
    op: str
    run: Callable[[torch.Tensor], torch.Tensor]
    inputs: torch.Tensor
    output: torch.Tensor
    name: str = ""
    pool: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None


@dataclass
class Unit:
    """A layer of the inverse: consecutive steps, their input and output values."""

    kind: UnitKind
    steps: list[Step]
    rectified: bool = False  # a block that ends in a ReLU
    name: str = field(init=False)

    def __post_init__(self) -> None:
        names = dict.fromkeys(s.name or s.op for s in self.steps)
        self.name = " + ".join(names)

    @property
    def inputs(self) -> torch.Tensor:
        return self.steps[0].inputs

    @property
    def output(self) -> torch.Tensor:
        return self.steps[-1].output

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step.run(x)
        return x

    def affine(self, x: torch.Tensor) -> torch.Tensor:
        """The block without its final ReLU."""
        for step in self.steps[:-1] if self.rectified else self.steps:
            x = step.run(x)
        return x

    def switches(self) -> torch.Tensor:
        """For a max pool: the flat index of each output's winner in its input plane."""
        assert self.kind == "maxpool"
        pooled = self.steps[0].pool
        assert pooled is not None
        return pooled(self.inputs)[1]

    def describe(self) -> str:
        return f"{self.name} ({self.kind}, input {tuple(self.inputs.shape[1:])})"


@dataclass
class Chain:
    """The units of a sequential network, from the input to the output."""

    units: list[Unit]

    def __len__(self) -> int:
        return len(self.units)

    @property
    def output(self) -> torch.Tensor:
        return self.units[-1].output

    def forward_from(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Run units ``index, index + 1, ...`` on ``x`` (the input of unit ``index``)."""
        for unit in self.units[index:]:
            x = unit(x)
        return x


class _Recorder(TorchFunctionMode):
    """Records the operations applied to the running tensor of a forward pass."""

    def __init__(self, start: torch.Tensor) -> None:
        super().__init__()
        self.current = start
        self.earlier: list[torch.Tensor] = []
        self.steps: list[Step] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        uses_current = any(t is self.current for t in tensors)
        reused = next((t for t in tensors if t is not self.current
                       and any(t is e for e in self.earlier)), None)
        op = getattr(func, "__name__", str(func))
        if reused is not None:
            raise MethodError(
                f"the layer-wise inverse needs a sequential network, but {op!r} combines the "
                f"running tensor with the output of an earlier operation ({self._where()}): a "
                "residual or branching connection (ResNet, DenseNet, EfficientNet, ...). Use "
                "a VGG-style network, or another method such as 'grad_cam'")
        if not uses_current:
            return func(*args, **kwargs)
        if not args or args[0] is not self.current:
            raise self._unsupported(op, "takes the running tensor as a secondary argument")
        kind = _kind(op, args, kwargs)
        if kind is None:
            result = func(*args, **kwargs)
            if not isinstance(result, torch.Tensor):  # dim(), size(), shape: no operation
                return result
            raise self._unsupported(op, "has no inverse rule")
        in_place = op.endswith("_") or bool(kwargs.get("inplace", False)) or (
            op in ("relu", "dropout") and len(args) > (3 if op == "dropout" else 1)
            and bool(args[-1]))
        before = self.current.clone() if in_place else self.current
        if in_place and self.steps:
            self.steps[-1].output = before
        result = func(*args, **kwargs)
        if not isinstance(result, torch.Tensor) or result.shape[:1] != before.shape[:1]:
            raise self._unsupported(op, "does not map a batch to a batch of the same size")
        self.steps.append(Step(kind, op, _runner(kind, func, args, kwargs, result), before,
                               result, pool=_pool(op, args, kwargs) if kind == "maxpool"
                               else None))
        self.earlier.append(self.current)
        self.current = result
        return result

    def _where(self) -> str:
        return f"after {self.steps[-1].name or self.steps[-1].op}" if self.steps else \
            "at the input"

    def _unsupported(self, op: str, why: str) -> MethodError:
        return MethodError(f"the layer-wise inverse cannot go through {op!r} ({self._where()}): "
                           f"it {why}. Supported: {SUPPORTED}, in a sequential network")


def _kind(op: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Kind | None:
    if op == "batch_norm":
        training = kwargs.get("training", args[5] if len(args) > 5 else False)
        return None if training else "affine"
    if op == "pad":
        mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
        value = kwargs.get("value", args[3] if len(args) > 3 else None)
        return "affine" if mode == "constant" and not value else None
    if op in _IDENTITY and op.startswith(("dropout", "alpha", "feature")):
        training = kwargs.get("training", args[2] if len(args) > 2 else True)
        return None if training else "identity"
    for names, kind in ((_AFFINE, "affine"), (_RELU, "relu"), (_MAXPOOL, "maxpool"),
                        (_AVGPOOL, "avgpool"), (_RESHAPE, "reshape"), (_IDENTITY, "identity")):
        if op in names:
            return kind  # type: ignore[return-value]
    return None


def _runner(kind: Kind, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
            result: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The step as a function of a new batch (parameters detached, never in place)."""
    if kind == "relu":
        return torch.relu
    if kind == "identity":
        return lambda x: x
    if kind == "reshape":
        shape = tuple(result.shape[1:])
        return lambda x: x.reshape(x.shape[0], *shape)
    if kind == "maxpool":
        kwargs = {k: v for k, v in kwargs.items() if k != "return_indices"}
    rest = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args[1:])
    options = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    return lambda x: func(x, *rest, **options)


def _pool(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]
          ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Max pooling with indices, same settings as the recorded call."""
    with_indices = {
        "max_pool1d": F.max_pool1d_with_indices, "max_pool2d": F.max_pool2d_with_indices,
        "adaptive_max_pool1d": F.adaptive_max_pool1d_with_indices,
        "adaptive_max_pool2d": F.adaptive_max_pool2d_with_indices,
    }[op]
    options = {k: v for k, v in kwargs.items() if k != "return_indices"}
    rest = args[1:]
    return lambda x: with_indices(x, *rest, **options)  # type: ignore[operator]


def _units(steps: list[Step]) -> list[Unit]:
    units: list[Unit] = []
    block: list[Step] = []

    def close(rectified: bool = False) -> None:
        if block:
            units.append(Unit("block", list(block), rectified))
            block.clear()

    for step in steps:
        if step.kind == "identity":  # dropout in eval mode, contiguous, clone: nothing to do
            continue
        if step.kind == "affine" or (block and step.kind == "reshape"):
            block.append(step)
        elif step.kind == "relu" and block:
            block.append(step)
            close(rectified=True)
        else:
            close()
            kind = {"relu": "relu", "maxpool": "maxpool", "avgpool": "avgpool"}.get(
                step.kind, "reshape")
            units.append(Unit(kind, [step]))  # type: ignore[arg-type]
    close()
    return units


def capture(model: nn.Module, inputs: torch.Tensor) -> Chain:
    """Run ``model`` once on ``inputs`` (eval mode, no gradient) and return its chain.

    Raises :class:`MethodError` if the network is not a chain of supported operations.
    """
    start = inputs.detach().clone()
    recorder = _Recorder(start)
    named = {m: n for n, m in model.named_modules() if n and not isinstance(m, nn.Identity)}

    def label(module: nn.Module, _args: Any, output: Any) -> None:
        # the innermost module whose output is the last step's names it (hooks fire inside
        # out); functional calls in the top-level forward keep their function's name
        if recorder.steps and output is recorder.steps[-1].output and not \
                recorder.steps[-1].name:
            recorder.steps[-1].name = named[module]

    with model_lock(model), torch.no_grad(), eval_mode(model), \
            forward_hooks(dict.fromkeys(named, label)), recorder:
        output = model(start)
    units = _units(recorder.steps)
    if not units:
        raise MethodError("the model applies no operation the layer-wise inverse can follow")
    if output is not recorder.current:
        raise MethodError("the model's output is not the end of its chain of operations (it "
                          "returns something computed beside it); the layer-wise inverse needs "
                          "a sequential network that returns its last operation's output")
    return Chain(units)
