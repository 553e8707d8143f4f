"""What a method is, for the registry, the widgets and the checks at the boundary.

A :class:`MethodSpec` describes a method completely: its name (= module = card folder), label,
family, whether it needs a layer, its parameters (types, ranges, defaults), its cost, its
paper, the backward rules its traces use, how its raw map is shown by default, and the
function that computes it. The widgets build their menus and controls from the specs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ..errors import MethodError, ParameterError, did_you_mean
from ..jobs import Cancelled, Progress
from ..layers import LayerCatalog
from ..render import RenderSettings
from ..rules import Rule
from ..trace import INPUT, Targets, TraceSet

Family = Literal["cam", "gradient", "propagation", "perturbation", "optimisation"]
Cost = Literal["instant", "pass", "iterative"]
#: ``"required"``: the map lives at a layer (``None`` = the model's default layer);
#: ``"optional"``: the method finds its own layer unless given one (CAM: the layer that feeds
#: the pooling); ``"none"``: the method works on the input and refuses a layer
LayerPolicy = Literal["required", "optional", "none"]

# Iterative kernels report progress with the job protocol of :mod:`xai_widgets.jobs`:
# ``progress(fraction, preview)`` with an optional raw preview map, which may raise
# :class:`Cancelled` to stop the kernel between two chunks.
__all__ = ["Cancelled", "KernelContext", "KernelResult", "LayerName", "MethodSpec", "Param",
           "Progress"]


@dataclass(frozen=True)
class Param:
    """One method parameter: ``kind`` is int, float, bool or str; ``low``/``high`` bound
    numbers (inclusive), ``choices`` lists the allowed strings.

    ``tensor=True`` on a str parameter also accepts, from Python, a tensor or array (e.g. a
    user's baseline image), which the kernel checks against the batch (a widget offers the
    choices). ``choices`` may be a function, for a list known only once the registry is
    built (SmoothGrad's base methods)."""

    name: str
    default: Any
    kind: type
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()
    tensor: bool = False

    @property
    def options(self) -> tuple[str, ...]:
        """The allowed strings of a str parameter."""
        return self.choices() if callable(self.choices) else self.choices

    def validate(self, value: Any, method: str) -> Any:
        where = f"{method}: parameter {self.name!r}"
        if self.tensor and isinstance(value, (torch.Tensor, np.ndarray)):
            return torch.as_tensor(value)
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ParameterError(f"{where} must be True or False, got {value!r}")
            return value
        if self.kind is str:
            if value not in self.options:
                raise ParameterError(f"{where} must be one of {', '.join(map(repr, self.options))}"
                                     f", got {value!r}")
            return value
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if is_number and isinstance(value, int) and value.bit_length() > 64:
            raise ParameterError(f"{where} must lie in [{self.low}, {self.high}], got an integer "
                                 f"of about {int(value.bit_length() * 0.30103) + 1} digits")
        if not is_number or (self.kind is int and not float(value).is_integer()):
            kind = "an integer" if self.kind is int else "a number"
            raise ParameterError(f"{where} must be {kind}, got {value!r}")
        number = self.kind(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ParameterError(f"{where} must be finite, got {value!r}")
        if (self.low is not None and number < self.low) or \
                (self.high is not None and number > self.high):
            raise ParameterError(f"{where} must lie in [{self.low}, {self.high}], got {value!r}")
        return number


class LayerName(Param):
    """A str parameter naming a layer of the model, or one of ``choices`` (such as
    ``"same"``). The layers are known only with the model: :meth:`validate` checks the type,
    the kernel resolves the name with the model's catalogue, and :meth:`layer_options` lists
    what a menu offers for one model."""

    def validate(self, value: Any, method: str) -> Any:
        if not isinstance(value, str) or not value:
            raise ParameterError(f"{method}: parameter {self.name!r} must be a layer name (a "
                                 "str such as 'features.3') or one of "
                                 f"{', '.join(map(repr, self.options))}, got {value!r}")
        return value

    def layer_options(self, layers: LayerCatalog) -> tuple[str, ...]:
        """``choices``, then the model's main layers, then its other candidate layers (each
        group in forward order)."""
        main = [info.name for info in layers.main]
        return (*self.options, *main, *(name for name in layers.names if name not in main))


@dataclass
class KernelContext:
    """Everything a kernel needs: the batch's traces, one target per image, the resolved
    layer name (``None`` when the method takes none) and validated parameters."""

    traces: TraceSet
    targets: Targets
    layer: str | None
    params: Mapping[str, Any]
    progress: Progress | None = None
    #: series an optimisation reports as it goes (e.g. ``"loss"``: ``(N, steps so far)``),
    #: for the caller to show next to the preview; the latest report's values
    live: dict[str, torch.Tensor] = field(default_factory=dict)

    def report(self, fraction: float, preview: torch.Tensor | None = None,
               **series: torch.Tensor) -> None:
        """Tell the caller how far an iterative kernel got, with an optional raw preview map
        and live ``series`` (may raise :class:`Cancelled`)."""
        if self.progress is not None:
            self.live.update({name: values.detach().cpu() for name, values in series.items()})
            self.progress(fraction, preview)

    @property
    def target_index(self) -> torch.Tensor:
        """The targets as a long tensor ``(N,)`` on the model's device."""
        return torch.tensor(self.targets, device=self.traces.bundle.device)

    def layer_activation_and_gradient(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations ``A`` and plain gradient ``∂ logit / ∂A`` at the layer, ``(N, K, h, w)``."""
        assert self.layer is not None, "the registry gives layer methods a layer"
        trace = self.traces.get("gradient", [self.layer])
        return trace.activation(self.layer), trace.gradient(self.targets, self.layer)

    def input_gradient(self, rule: Rule = "gradient") -> torch.Tensor:
        """``∂ logit / ∂x`` at the model input under ``rule``, ``(N, 3, H, W)``."""
        return self.traces.get(rule).gradient(self.targets, INPUT)


@dataclass
class KernelResult:
    """A raw float32 map, ``(N, h, w)`` or ``(N, C, H, W)``, and named extras. ``layer``
    names the layer the map belongs to when the method chose it (CAM)."""

    map: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)
    layer: str | None = None


@dataclass(frozen=True)
class MethodSpec:
    """A method as the registry and the widgets know it."""

    name: str
    label: str
    family: Family
    layer_policy: LayerPolicy
    cost: Cost
    paper: str
    rules: tuple[Rule, ...]
    compute: Callable[[KernelContext], KernelResult]
    display: RenderSettings
    params: tuple[Param, ...] = ()
    per_channel: bool = False
    needs_gradient: bool = True
    #: a gradient-type map of the input that noise wrappers (SmoothGrad) may average
    noise_wrappable: bool = False
    #: the kernel runs several backwards through one trace's graph; otherwise ``explain()``
    #: frees each part of the graph as its backward passes it (a lower peak of memory)
    reuses_graph: bool = False
    summary: str = ""

    @property
    def takes_layer(self) -> bool:
        return self.layer_policy != "none"

    def resolve_layer(self, bundle: Any, layer: Any) -> str | None:
        """The layer the kernel gets, by the spec's :data:`LayerPolicy`: a canonical name,
        or ``None`` (no layer, or the method's own choice). The one check of a ``layer=``."""
        if self.layer_policy == "none":
            if layer is not None:
                raise MethodError(f"{self.name} works on the input and takes no layer; drop "
                                  "layer= or use a layer method such as 'grad_cam'")
            return None
        if layer is None and self.layer_policy == "optional":
            return None
        return str(bundle.layers.resolve(layer, bundle.model))

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults updated with ``params``, each checked; unknown names are refused."""
        known = {p.name: p for p in self.params}
        for name in params:
            if name not in known:
                hint = did_you_mean(name, known) or (
                    f"its parameters are {', '.join(known)}" if known else "it takes none")
                raise ParameterError(f"{self.name} has no parameter {name!r}; {hint}")
        return {**self.defaults(), **{n: known[n].validate(v, self.name)
                                      for n, v in params.items()}}
