"""What a metric is, for the registry, the folder evaluation, the summary and the views.

A :class:`MetricSpec` describes a metric the way :class:`~xai_widgets.kernels.MethodSpec`
describes a method: its name (a key of the results file and a choice of the command line),
label, paper, the numbers it writes per image (its :class:`Column`\\ s: which way is better,
and whether a value is a 0/1 outcome whose mean is a proportion), whether it needs the
objects' boxes or the images' labels, its cost, and the function that measures one image of a
folder evaluation. :mod:`xai_widgets.metrics.registry` lists the specs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from ..explanation import Explanation
from ..kernels.spec import Cost

if TYPE_CHECKING:
    from .settings import EvaluationSettings

#: which way a number is better: ``"higher"`` or ``"lower"``
Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Column:
    """One number per record that the summary averages.

    ``key``: the record's key (``key@p``, e.g. ``reidentified@0.5``, is the column at
    parameter ``p``); ``proportion``: each value is 0 or 1 (a hit, a re-identification), so
    the mean is a proportion and its 95 % interval is Wilson's, which stays in [0, 1].
    """

    key: str
    label: str
    direction: Direction
    proportion: bool = False

    @property
    def arrow(self) -> str:
        """``"↑"`` (higher is better) or ``"↓"``."""
        return "↑" if self.direction == "higher" else "↓"

    @property
    def better(self) -> str:
        """``"higher is better"`` or ``"lower is better"``."""
        return f"{self.direction} is better"

    def best(self, values: Sequence[float]) -> set[int]:
        """The positions of the best of ``values`` (every tied one; NaN is never best)."""
        finite = [v for v in values if not math.isnan(v)]
        if not finite:
            return set()
        top = max(finite) if self.direction == "higher" else min(finite)
        return {i for i, v in enumerate(values) if v == top}


@dataclass(frozen=True)
class Case:
    """One image of a folder evaluation, explained by one method: the ``explanation``, its
    model ``inputs`` ``(1, 3, H, W)``, the object ``region`` ``(1, H, W)`` bool (``None``: no
    box for this image, or no metric needs one) and the run's ``settings``."""

    explanation: Explanation
    inputs: torch.Tensor
    region: torch.Tensor | None
    settings: EvaluationSettings


#: ``measure(case, names)`` -> the record's fields of the metrics ``names`` (the chosen specs
#: that share this function, so that e.g. deletion and insertion share their passes)
Measure = Callable[[Case, tuple[str, ...]], dict[str, Any]]


@dataclass(frozen=True)
class MetricSpec:
    """A metric as the registry, the folder evaluation, the summary and the views know it.

    ``columns``: the numbers it writes per record, its headline first; ``needs_boxes`` /
    ``needs_labels``: a folder evaluation refuses to start without them; ``cost``:
    ``"instant"`` (no model pass), ``"pass"`` (a few) or ``"iterative"`` (many).
    """

    name: str
    label: str
    summary: str
    paper: str
    columns: tuple[Column, ...]
    cost: Cost
    measure: Measure
    needs_boxes: bool = False
    needs_labels: bool = False

    @property
    def headline(self) -> Column:
        """The column that stands for the metric (a table cell, a sort order)."""
        return self.columns[0]

    @property
    def direction(self) -> Direction:
        """Which way the headline number is better."""
        return self.headline.direction


def number(value: Any) -> float | None:
    """A record's number: finite values rounded to 6 decimals, ``None`` for NaN/inf
    (undefined: an empty box, a map with no energy)."""
    result = float(value)
    return round(result, 6) if math.isfinite(result) else None
