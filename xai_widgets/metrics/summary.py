"""Summaries of results files: mean ± 95% confidence interval per method × metric, plots.

A results file (JSON lines, see :mod:`.folder`) holds one record per image and method.
:func:`summarize` reads one file or several (the shards of one run) and keeps, for every
method and metric, the values that are defined; undefined ones (an empty box, a map with no
energy) and failed images are counted and shown, never averaged away. The interval is
Student's t: ``mean ± t(0.975, n − 1) · s / √n``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from .subject import MetricError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: record keys that hold one number per record, in the order of the table
SCALARS = ("deletion", "insertion", "pointing", "energy_pointing", "sanity_spearman",
           "sanity_spearman_abs", "sanity_ssim", "sanity_hog")
CURVES = ("deletion", "insertion")


@dataclass(frozen=True)
class Row:
    """One method × metric: ``n`` defined values, their mean and 95% interval half-width
    (NaN for fewer than two), and ``undefined`` records without a value."""

    method: str
    metric: str
    n: int
    mean: float
    half_width: float
    undefined: int


@dataclass
class Summary:
    """Rows of the table, the mean curves by method and kind (``fractions``, mean, half-width
    of the 95% interval per point), and the failed records ``(image, method, error)``."""

    rows: list[Row]
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]
    failed: list[tuple[str, str | None, str]] = field(default_factory=list)
    records: int = 0

    def value(self, method: str, metric: str) -> Row:
        """The row of ``method`` × ``metric``."""
        for row in self.rows:
            if (row.method, row.metric) == (method, metric):
                return row
        raise KeyError(f"no {metric!r} for {method!r} in this summary")

    def table(self) -> str:
        """A Markdown table: method, metric, n, mean ± 95% CI, undefined."""
        lines = ["| method | metric | n | mean ± 95% CI | undefined |", "|---|---|---|---|---|"]
        for row in self.rows:
            spread = "" if math.isnan(row.half_width) else f" ± {row.half_width:.3f}"
            lines.append(f"| {row.method} | {row.metric} | {row.n} | {row.mean:.3f}{spread} | "
                         f"{row.undefined} |")
        if self.failed:
            lines += ["", f"{len(self.failed)} failed (not in the table):"]
            lines += [f"- {image}{f' ({method})' if method else ''}: {error}"
                      for image, method, error in self.failed]
        return "\n".join(lines)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(row.method for row in self.rows))

    def figure(self, method: str) -> Figure:
        """Mean deletion/insertion curves (with 95% bands) and the other metrics of
        ``method``."""
        from matplotlib.figure import Figure

        figure = Figure(figsize=(8.0, 3.2), layout="constrained")
        left, right = figure.subplots(1, 2)
        for kind, (x, mean, half) in self.curves.get(method, {}).items():
            colour = "#c0392b" if kind == "deletion" else "#2471a3"
            area = self.value(method, kind)
            left.plot(x, mean, color=colour, label=f"{kind}: area {area.mean:.3f} (n={area.n})")
            left.fill_between(x, mean - half, mean + half, color=colour, alpha=0.2, lw=0)
        left.set_xlabel("fraction of pixels deleted / inserted")
        left.set_ylabel("mean score of the target")
        left.set_xlim(0, 1)
        if self.curves.get(method):
            left.legend(fontsize=8)
        rows = [r for r in self.rows if r.method == method]
        positions = np.arange(len(rows))
        right.barh(positions, [r.mean for r in rows],
                   xerr=[0 if math.isnan(r.half_width) else r.half_width for r in rows],
                   color="#7f8c8d", capsize=3)
        right.set_yticks(positions, [f"{r.metric} (n={r.n})" for r in rows], fontsize=8)
        right.invert_yaxis()
        right.set_xlabel("mean ± 95% CI")
        figure.suptitle(method, fontsize=10)
        return figure

    def save_plots(self, stem: str | Path) -> list[Path]:
        """One PNG per method, ``<stem>.<method>.png``; returns the paths."""
        paths = []
        for method in self.methods:
            path = Path(f"{stem}.{method}.png")
            self.figure(method).savefig(path, dpi=120)
            paths.append(path)
        return paths


def summarize(*paths: str | Path) -> Summary:
    """The summary of one or more results files (e.g. the shards of one run)."""
    records: list[dict[str, Any]] = []
    for path in paths:
        records.extend(r for r in read_records(Path(path)) if r.get("kind") != "header")
    return summarize_records(records)


def summarize_records(records: Iterable[dict[str, Any]]) -> Summary:
    """The summary of records (dicts as written by :func:`.folder.evaluate_folder`)."""
    values: dict[tuple[str, str], list[float | None]] = {}
    curves: dict[tuple[str, str], list[list[float]]] = {}
    grids: dict[tuple[str, str], set[tuple[int, int]]] = {}
    failed: list[tuple[str, str | None, str]] = []
    count = 0
    for record in records:
        count += 1
        if "error" in record:
            failed.append((str(record.get("image")), record.get("method"), str(record["error"])))
            continue
        method = str(record["method"])
        for key, value in _scalars(record):
            values.setdefault((method, key), []).append(value)
        for kind, curve in record.get("curves", {}).items():
            curves.setdefault((method, kind), []).append(curve)
            grids.setdefault((method, kind), set()).add(tuple(record["curve_step"]))
    methods = list(dict.fromkeys(method for method, _ in values))
    order = {name: i for i, name in enumerate(SCALARS)}
    rows = sorted((_row(method, metric, found) for (method, metric), found in values.items()),
                  key=lambda r: (methods.index(r.method), order.get(r.metric, len(order)),
                                 r.metric))
    mean_curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for (method, kind), found in curves.items():
        if len(grids[(method, kind)]) != 1:
            continue  # curves on different grids (mixed runs) have no common mean
        ((step, pixels),) = grids[(method, kind)]
        array = np.asarray([[np.nan if v is None else v for v in c] for c in found],
                           dtype=np.float64)
        fractions = np.minimum(np.arange(array.shape[1]) * step, pixels) / pixels
        mean_curves.setdefault(method, {})[kind] = (fractions, array.mean(axis=0),
                                                    _half_width(array))
    return Summary(rows, mean_curves, failed, count)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The complete records of a results file (a torn last line is ignored)."""
    if not path.exists():
        raise MetricError(f"no results file at {str(path)!r}")
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the last newline is empty or torn
    records = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise MetricError(f"line {number} of {str(path)!r} is not JSON ({exc}); the file "
                              "is damaged: remove that line to resume") from exc
    return records


def _scalars(record: dict[str, Any]) -> list[tuple[str, float | None]]:
    found: list[tuple[str, float | None]] = [(k, record[k]) for k in SCALARS if k in record]
    for i, level in enumerate(record.get("thresholds", [])):
        found.append((f"amount@{level:g}", record["amount"][i]))
        found.append((f"reidentified@{level:g}", record["reidentified"][i]))
    return found


def _row(method: str, metric: str, found: list[float | None]) -> Row:
    defined = np.asarray([float(v) for v in found if v is not None], dtype=np.float64)
    mean = float(defined.mean()) if len(defined) else math.nan
    half = float(_half_width(defined[:, None])[0]) if len(defined) else math.nan
    return Row(method, metric, len(defined), mean, half, len(found) - len(defined))


def _half_width(values: np.ndarray) -> np.ndarray:
    """Half-width of the 95% t-interval of the mean, per column of ``(n, D)``."""
    n = values.shape[0]
    if n < 2:
        return np.full(values.shape[1], np.nan)
    return stats.t.ppf(0.975, n - 1) * values.std(axis=0, ddof=1) / math.sqrt(n)
