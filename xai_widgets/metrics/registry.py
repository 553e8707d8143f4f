"""The registry: the :class:`~.spec.MetricSpec`\\ s of the metric modules, in table order.

The folder evaluation (which metrics exist, which need boxes, what to measure per image), the
summary (its columns, which way each is better, which are proportions), the command line's
choices and the views' tables read it. Adding a metric is one module with ``SPECS`` and one
line in the tuple below; ``tests/metrics/test_metric_registry.py`` checks that they agree.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from ..errors import ParameterError, did_you_mean
from .spec import Column, MetricSpec

#: the metric modules, by name (the package exports functions of the same names, e.g.
#: ``metrics.deletion``, so the modules are looked up as modules)
MODULES = (
    "deletion",
    "pointing",
    "tradeoff",
    "sanity",
)

REGISTRY: dict[str, MetricSpec] = {
    spec.name: spec for module in MODULES
    for spec in importlib.import_module(f"{__package__}.{module}").SPECS}


def get_metric(name: str | MetricSpec) -> MetricSpec:
    """The spec of metric ``name``; a :class:`ParameterError` with suggestions otherwise."""
    if isinstance(name, MetricSpec):
        return name
    if isinstance(name, str) and name in REGISTRY:
        return REGISTRY[name]
    hint = did_you_mean(str(name), REGISTRY) or f"choose from {', '.join(REGISTRY)}"
    raise ParameterError(f"unknown metric {name!r}; {hint}")


def choose(names: str | Sequence[str]) -> tuple[str, ...]:
    """Metric names (a sequence, or one comma-separated string) checked, without repeats, in
    the registry's order."""
    if isinstance(names, str):
        names = names.split(",")
    chosen = {get_metric(n.strip() if isinstance(n, str) else n).name
              for n in names if not isinstance(n, str) or n.strip()}
    if not chosen:
        raise ParameterError(f"give at least one metric: {', '.join(REGISTRY)}")
    return tuple(name for name in REGISTRY if name in chosen)


def column(key: str) -> Column | None:
    """The column of a record's key (``key`` or ``key@parameter``); ``None``: not a column."""
    base = key.split("@", 1)[0]
    for spec in REGISTRY.values():
        for found in spec.columns:
            if found.key == base:
                return found
    return None


def columns() -> list[Column]:
    """Every column of every metric, in table order."""
    return [found for spec in REGISTRY.values() for found in spec.columns]
