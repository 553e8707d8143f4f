"""Deletion and insertion areas of a grid of maps of one image, as a table.

:func:`area_table` measures every map of a grid (rows: methods; columns: classes, layers or
models, as :class:`xai_widgets.Compare` lays them out) with :func:`.deletion_insertion`,
batched: the maps that share a model, a model input, a map shape and a way of being read
(channel reduction and polarity) go through one call, as copies of the image with one map and
one target each. :class:`AreaTable` holds the areas: an HTML table in Jupyter with the best
map of each column in bold (lowest deletion, highest insertion), Markdown, and records for
pandas (``pandas.DataFrame(table.records())``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import MetricError, ParameterError, did_you_mean
from ..explanation import Explanation
from ..kernels.spec import Progress
from .deletion import Score, deletion_insertion
from .registry import get_metric

#: the options of :func:`.deletion_insertion` that a table passes on
OPTIONS = ("deletion_substrate", "insertion_substrate", "channels", "polarity")
DELETION, INSERTION = (get_metric(name).headline for name in ("deletion", "insertion"))
HEADER = f"deletion {DELETION.arrow} / insertion {INSERTION.arrow}"


@dataclass(frozen=True)
class AreaRow:
    """The areas of one cell: ``method`` (its label) × ``column`` (its title)."""

    method: str
    column: str
    deletion: float
    insertion: float


@dataclass(frozen=True)
class AreaTable:
    """Areas of methods × columns. ``rows``: one per cell, method by method, column by column
    (``len(methods) · len(columns)``); ``score``: what the curves read (probability or logit);
    ``pixels_per_step``: of every curve (``None`` where the columns' models differ)."""

    methods: tuple[str, ...]
    columns: tuple[str, ...]
    rows: tuple[AreaRow, ...]
    score: str
    pixels_per_step: int | None

    def cell(self, method: int, column: int) -> AreaRow:
        """The cell of row ``method`` and column ``column`` (positions)."""
        return self.rows[method * len(self.columns) + column]

    def best(self, column: int) -> tuple[set[int], set[int]]:
        """The rows (positions) with the best deletion area and with the best insertion area
        in ``column`` (every tied row; lowest and highest, as the metric registry says)."""
        cells = [self.cell(row, column) for row in range(len(self.methods))]
        return (DELETION.best([c.deletion for c in cells]),
                INSERTION.best([c.insertion for c in cells]))

    def records(self) -> list[dict[str, Any]]:
        """One dict per cell (``method``, ``column``, ``deletion``, ``insertion``)."""
        return [asdict(row) for row in self.rows]

    def caption(self) -> str:
        step = "" if self.pixels_per_step is None else f", {self.pixels_per_step} pixels per step"
        return f"areas under the curves of the {self.score}{step}; best of each column in bold"

    def _texts(self, bold: tuple[str, str]) -> list[list[str]]:
        """Each cell as ``"deletion / insertion"``, the best wrapped in ``bold``."""
        best = [self.best(column) for column in range(len(self.columns))]

        def mark(value: float, is_best: bool) -> str:
            return f"{bold[0]}{value:.3f}{bold[1]}" if is_best else f"{value:.3f}"

        return [[f"{mark(c.deletion, row in best[col][0])} / "
                 f"{mark(c.insertion, row in best[col][1])}"
                 for col, c in enumerate(self.rows[row * len(self.columns):
                                                   (row + 1) * len(self.columns)])]
                for row in range(len(self.methods))]

    def to_markdown(self) -> str:
        """A Markdown table: methods × columns, best of each column in bold."""
        def cell(text: str) -> str:
            return text.replace("|", "\\|")

        lines = ["| " + " | ".join([HEADER, *map(cell, self.columns)]) + " |",
                 "|" + "---|" * (len(self.columns) + 1)]
        for method, texts in zip(self.methods, self._texts(("**", "**")), strict=True):
            lines.append("| " + " | ".join([cell(method), *texts]) + " |")
        return "\n".join(lines) + f"\n\n{self.caption()}"

    def __repr__(self) -> str:
        table = [[HEADER, *self.columns]]
        table += [[method, *texts] for method, texts in
                  zip(self.methods, self._texts(("", "*")), strict=True)]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True))
                 .rstrip() for row in table]
        return "\n".join([*lines, self.caption().replace("in bold", "marked *")])

    def _repr_html_(self) -> str:
        def cell(tag: str, text: str, style: str = "") -> str:
            return f"<{tag}{style}>{text}</{tag}>"

        right = ' style="text-align: right"'
        head = "".join(cell("th", html.escape(t)) for t in (HEADER, *self.columns))
        body = "".join(
            "<tr>" + cell("th", html.escape(method)) +
            "".join(cell("td", text, right) for text in texts) + "</tr>"
            for method, texts in zip(self.methods, self._texts(("<b>", "</b>")), strict=True))
        return (f'<table class="xai-areas"><caption>{html.escape(self.caption())}</caption>'
                f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def area_table(grid: Sequence[Sequence[Explanation]], inputs: Sequence[torch.Tensor],
               columns: Sequence[str], *, settings: Mapping[str, Any] | None = None,
               pixels_per_step: int | None = None, score: Score = "probability",
               chunk_size: int | None = None, progress: Progress | None = None,
               **options: Any) -> AreaTable:
    """The deletion and insertion areas of every map of ``grid``.

    ``grid[r][c]``: the explanation (of one image) of method ``r`` in column ``c``;
    ``inputs[c]``: column ``c``'s model input, ``(1, 3, H, W)``; ``columns``: their titles.
    Each map ranks the pixels as it is shown: its method's display settings, updated by
    ``settings`` (:class:`~xai_widgets.render.RenderSettings` fields, as
    :class:`~xai_widgets.Compare` applies them) and by ``channels``/``polarity`` in
    ``options``. ``pixels_per_step``, ``score``, ``chunk_size``, ``deletion_substrate`` and
    ``insertion_substrate``: as :func:`.deletion_insertion` (its defaults, and its errors,
    e.g. :class:`~xai_widgets.errors.ParameterError`, come through).
    ``progress(fraction, None)`` runs over the whole table.
    """
    unknown = [name for name in options if name not in OPTIONS]
    if unknown:
        hint = did_you_mean(unknown[0], OPTIONS)
        raise ParameterError(f"unknown option {unknown[0]!r} for the areas; accepted: "
                             f"pixels_per_step, score, chunk_size, progress, "
                             f"{', '.join(OPTIONS)}{'; ' + hint if hint else ''}")
    if chunk_size is not None:
        options["chunk_size"] = chunk_size
    shown: dict[str, Any] = dict(settings or {})
    shown.update((k, v) for k in ("channels", "polarity")
                 if (v := options.pop(k, None)) is not None)
    if len(grid) == 0 or any(len(row) != len(columns) for row in grid) \
            or len(inputs) != len(columns):
        raise MetricError(f"the grid needs one explanation per method and column and one input "
                          f"per column: {len(columns)} columns, {len(inputs)} inputs, rows of "
                          f"{[len(row) for row in grid]}")
    groups: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
    for r, row in enumerate(grid):
        for c, explanation in enumerate(row):
            if len(explanation) != 1:
                raise MetricError(f"each cell explains one image; cell ({r}, {c}) explains "
                                  f"{len(explanation)}")
            display = explanation.settings(**shown)
            key = (id(explanation.bundle), id(inputs[c]), tuple(explanation.map.shape[1:]),
                   display.channels, display.polarity)
            groups.setdefault(key, []).append((r, c))

    total = sum(len(cells) for cells in groups.values())
    areas: dict[tuple[int, int], tuple[float, float]] = {}
    steps: set[int] = set()
    for (_, _, _, channels, polarity), cells in groups.items():
        first = grid[cells[0][0]][cells[0][1]]
        done = len(areas)

        def report(fraction: float, preview: Any, done: int = done, size: int = len(cells)
                   ) -> None:
            if progress is not None:
                progress((done + fraction * size) / total, preview)

        result = deletion_insertion(
            first.bundle, inputs[cells[0][1]].expand(len(cells), -1, -1, -1),
            torch.cat([grid[r][c].map for r, c in cells]),
            [grid[r][c].targets[0] for r, c in cells], pixels_per_step=pixels_per_step,
            score=score, channels=channels, polarity=polarity, progress=report, **options)
        steps.add(result.pixels_per_step)
        for (r, c), deleted, inserted in zip(cells, result.deletion.auc.tolist(),
                                             result.insertion.auc.tolist(), strict=True):
            areas[r, c] = (deleted, inserted)

    methods = tuple(row[0].method.label for row in grid)
    rows = tuple(AreaRow(methods[r], columns[c], *areas[r, c])
                 for r in range(len(grid)) for c in range(len(columns)))
    return AreaTable(methods, tuple(columns), rows, score,
                     steps.pop() if len(steps) == 1 else None)
