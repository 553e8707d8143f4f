"""Summaries of results files: mean and 95 % confidence interval per method × metric, plots.

A results file (JSON lines, see :mod:`.folder`, or a Parquet results folder, see
:mod:`.parquet`: the same records) holds one record per image and method.
:func:`summarize` reads one file or several (the shards of one run) and keeps, for every
method and column of the metric registry, the values that are defined; undefined ones (an
empty box, a map with no energy), failed images and records with warnings are counted and
shown, never averaged away. A record of one (image, method) found twice (a file given twice,
overlapping shards) is refused: nothing is counted twice.

The interval of a mean is Student's t, ``mean ± t(0.975, n − 1) · s / √n``; that of a
proportion (a column of 0/1 outcomes: pointing-game hits, re-identifications) is Wilson's
score interval, which stays within [0, 1] and is not symmetric about the mean:
``(p + z²/2n ± z √(p(1 − p)/n + z²/4n²)) / (1 + z²/n)``, ``z = 1.96``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import stats

from ..errors import MetricError
from .registry import column, columns

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Interval = Literal["t", "wilson"]


@dataclass(frozen=True)
class Row:
    """One method × record key (a metric's column): ``n`` defined values, their mean, the
    95 % interval ``[low, high]`` (NaN where undefined: fewer than two values for a t
    interval, none for Wilson's), which ``interval`` it is, and ``undefined`` records
    without a value."""

    method: str
    metric: str
    n: int
    mean: float
    low: float
    high: float
    interval: Interval
    undefined: int

    @property
    def half_width(self) -> float:
        """Half the interval's width (for a t interval, the ``±`` of ``mean ± h``)."""
        return (self.high - self.low) / 2

    def text(self) -> str:
        """``mean ± h`` (t) or ``mean [low, high]`` (Wilson), three decimals."""
        if math.isnan(self.low):
            return f"{self.mean:.3f}"
        if self.interval == "t":
            return f"{self.mean:.3f} ± {self.half_width:.3f}"
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass
class Summary:
    """Rows of the table, the mean curves by method and kind (``fractions``, mean, half-width
    of the 95% interval per point), and the failed records ``(image, method, error)``."""

    rows: list[Row]
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]
    failed: list[tuple[str, str | None, str]] = field(default_factory=list)
    records: int = 0
    warned: list[tuple[str, str, str]] = field(default_factory=list)

    def value(self, method: str, metric: str) -> Row:
        """The row of ``method`` × ``metric``."""
        for row in self.rows:
            if (row.method, row.metric) == (method, metric):
                return row
        raise KeyError(f"no {metric!r} for {method!r} in this summary")

    def table(self) -> str:
        """A Markdown table: method, metric (↑ higher / ↓ lower is better), n, mean and 95 %
        interval (``± h``: Student's t; ``[low, high]``: Wilson's, for proportions),
        undefined; then the failed records and the records with warnings."""
        lines = ["| method | metric | n | mean, 95% CI | undefined |", "|---|---|---|---|---|"]
        for row in self.rows:
            found = column(row.metric)
            arrow = f" {found.arrow}" if found is not None else ""
            lines.append(f"| {row.method} | {row.metric}{arrow} | {row.n} | {row.text()} | "
                         f"{row.undefined} |")
        if self.failed:
            lines += ["", f"{len(self.failed)} failed (not in the table):"]
            lines += [f"- {printable(image)}{f' ({method})' if method else ''}: "
                      f"{printable(error)}" for image, method, error in self.failed]
        if self.warned:
            records = len({(image, method) for image, method, _ in self.warned})
            lines += ["", f"{records} records with warnings (in the table):"]
            lines += [f"- {printable(image)} ({method}): {printable(note)}"
                      for image, method, note in self.warned]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

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
        errors = np.nan_to_num([[r.mean - r.low for r in rows], [r.high - r.mean for r in rows]])
        right.barh(positions, [r.mean for r in rows], xerr=errors, color="#7f8c8d", capsize=3)
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
    """The summary of one or more results files (e.g. the shards of one run): JSON lines or
    Parquet (a results folder ``*.parquet`` or one of its parts)."""
    records: list[dict[str, Any]] = []
    sources: list[str] = []
    for path in paths:
        found = read_results(Path(path))[1:]
        records.extend(found)
        sources.extend([str(path)] * len(found))
    return summarize_records(records, sources)


def summarize_records(records: Iterable[dict[str, Any]], sources: Sequence[str] | None = None
                      ) -> Summary:
    """The summary of records (dicts as written by :func:`.folder.evaluate_folder`);
    ``sources``: the file of each record, for the error that refuses a duplicate."""
    values: dict[tuple[str, str], list[float | None]] = {}
    curves: dict[tuple[str, str], list[list[float]]] = {}
    grids: dict[tuple[str, str], set[tuple[int, int]]] = {}
    failed: list[tuple[str, str | None, str]] = []
    warned: list[tuple[str, str, str]] = []
    seen: dict[tuple[str, str | None], int] = {}
    count = 0
    for count, record in enumerate(records, start=1):
        key = (str(record.get("image")), record.get("method"))
        if key in seen:
            where = "" if sources is None else \
                f" (in {sources[seen[key]]!r} and {sources[count - 1]!r})"
            of = f"image {printable(key[0])!r}" + (f", method {key[1]!r}" if key[1] else "")
            raise MetricError(
                f"the record of {of} appears twice{where}: give each results file once, and "
                "shards that do not overlap (start=k, stride=n for k = 0..n-1)")
        seen[key] = count - 1
        if "error" in record:
            failed.append((key[0], key[1], str(record["error"])))
            continue
        method = str(record["method"])
        warned.extend((key[0], method, str(note)) for note in record.get("warnings", []))
        for name, value in record.items():
            if column(name) is not None:
                values.setdefault((method, name), []).append(value)
        for kind, curve in record.get("curves", {}).items():
            curves.setdefault((method, kind), []).append(curve)
            grids.setdefault((method, kind), set()).add(tuple(record["curve_step"]))
    methods = list(dict.fromkeys(method for method, _ in values))
    order = {found.key: i for i, found in enumerate(columns())}
    rows = sorted((_row(method, metric, found) for (method, metric), found in values.items()),
                  key=lambda r: (methods.index(r.method), order[r.metric.split("@")[0]],
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
    return Summary(rows, mean_curves, failed, count, warned)


def parse_header(line: bytes) -> dict[str, Any] | None:
    """The header of a results file from its first line (bytes); ``None``: not one."""
    try:
        header = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return header if isinstance(header, dict) and header.get("kind") == "header" else None


def read_results(path: Path) -> list[dict[str, Any]]:
    """The header and the records of a results file: JSON lines (:func:`read_records`), or
    Parquet: a results folder (its parts, then its journal of records not yet in a part) or
    one part."""
    from . import parquet

    if not parquet.is_parquet(path):
        return read_records(path)
    if path.is_file():
        header, records = parquet.read_part(path)
        return [header, *records]
    journal = path / parquet.PENDING
    if not path.is_dir() or not (journal.is_file() or parquet.parts(path)):
        raise MetricError(f"no Parquet results folder at {printable(str(path))!r}")
    found: list[tuple[Path, dict[str, Any]]] = []
    records = []
    for part in parquet.parts(path):
        header, part_records = parquet.read_part(part)
        found.append((part, header))
        records += part_records
    if journal.is_file() and journal.stat().st_size:
        header, *pending = read_records(journal)
        found.append((journal, header))
        done = {(r["image"], r.get("method")) for r in records}
        records += [r for r in pending if (r["image"], r.get("method")) not in done]
    if not found:
        raise MetricError(f"the Parquet results folder {printable(str(path))!r} holds no "
                          "results yet")
    for where, header in found[1:]:
        if header != found[0][1]:
            raise MetricError(f"{printable(str(where))!r} holds results of other settings than "
                              f"{printable(str(found[0][0]))!r}; a results folder holds one run")
    return [found[0][1], *records]


def read_records(path: Path, data: bytes | None = None) -> list[dict[str, Any]]:
    """The header and the complete records of a results file (a torn last line is ignored);
    ``data``: its bytes, if already read. A :class:`MetricError` for a missing file, one that
    is not a results file, or a damaged line."""
    if data is None:
        if not path.is_file():
            raise MetricError(f"no results file at {printable(str(path))!r}")
        data = path.read_bytes()
    lines = data.split(b"\n")[:-1]  # the part after the last newline is empty or torn
    if not lines or parse_header(lines[0]) is None:
        raise MetricError(f"{printable(str(path))!r} is not a results file of evaluate_folder "
                          "(its first line is not an evaluation's header); give the JSON-lines "
                          "file that evaluate wrote")
    records = []
    for position, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MetricError(f"line {position} of {printable(str(path))!r} is not JSON "
                              f"({exc}); the file is damaged: remove that line to resume"
                              ) from exc
    return records


def printable(text: str) -> str:
    """``text`` safe to print: the bytes of a file name that are not UTF-8 (lone surrogates
    after ``os.fsdecode``) as ``\\udcXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _row(method: str, metric: str, found: list[float | None]) -> Row:
    defined = np.asarray([float(v) for v in found if v is not None], dtype=np.float64)
    undefined = len(found) - len(defined)
    found_column = column(metric)
    if found_column is not None and found_column.proportion:
        low, high = wilson(int(defined.sum()), len(defined))
        return Row(method, metric, len(defined), _mean(defined), low, high, "wilson", undefined)
    mean = _mean(defined)
    half = float(_half_width(defined[:, None])[0]) if len(defined) else math.nan
    return Row(method, metric, len(defined), mean, mean - half, mean + half, "t", undefined)


def wilson(successes: int, n: int, z: float = float(stats.norm.ppf(0.975))
           ) -> tuple[float, float]:
    """Wilson's score interval of a proportion ``successes / n`` (95 % by default); NaN for
    ``n = 0``."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else math.nan


def _half_width(values: np.ndarray) -> np.ndarray:
    """Half-width of the 95% t-interval of the mean, per column of ``(n, D)``."""
    n = values.shape[0]
    if n < 2:
        return np.full(values.shape[1], np.nan)
    return stats.t.ppf(0.975, n - 1) * values.std(axis=0, ddof=1) / math.sqrt(n)
