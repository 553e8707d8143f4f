"""Compare: one image, a grid of methods × classes (or × layers, or × models), laid out like a
figure of a paper, with the top classes and their probabilities; saves to PNG. ``metrics()``
adds the deletion and insertion areas of every cell (:mod:`xai_widgets.metrics.table`).
With ``insecurities=``, the grid is one of deliberative explanations instead: rows are images
(× layers) × difficulty/attribution choices, columns the difficulty map and the most insecure
class pairs (Wang & Vasconcelos, NeurIPS 2019)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch import nn

from ..deliberative.ambiguity import check_area
from ..deliberative.core import Analysis, check_attribution
from ..deliberative.result import STYLES, InsecurityResult, Style
from ..deliberative.scores import resolve_difficulty
from ..errors import ParameterError, did_you_mean
from ..explanation import Explanation
from ..figures import ShowsFigure, writable_path
from ..kernels import get_method
from ..kernels.spec import Progress
from ..metrics.deletion import Score
from ..metrics.table import AreaTable, area_table
from ..models import ModelBundle
from ..progress import progress_bar
from ..session import Selection, Session
from ..targets import top_count

#: the options of one row of insecurities: those of :meth:`deliberative.Analysis.result`
ROW_OPTIONS = ("difficulty", "attribution", "normalise", "per_cell", "predictor", "hp_score",
               "ig_steps", "chunk_size")


@dataclass(frozen=True)
class PairRow:
    """One row of an insecurity grid: its ``title`` and the insecurities of its image."""

    title: str
    result: InsecurityResult


class Compare(ShowsFigure):
    """Explanations of one image side by side; every cell shares the traces of its model.

    Rows are ``methods``: names, or ``(name, params)`` pairs for a method with parameters
    of its own (e.g. ``("feature_inversion", {"iterations": 40})``); default Grad-CAM and
    guided backprop. Columns are ``classes`` (``"topK"`` for the K most probable, default
    ``"top3"``, or a list of indices/names), or ``layers`` (one class), or the models when
    ``model`` is a list.
    ``settings`` are :class:`~xai_widgets.render.RenderSettings` fields applied to every cell
    (each method keeps its own default rendering otherwise).

    ``insecurities=``: the insecurities of deliberative explanations (Wang & Vasconcelos,
    "Deliberative Explanations: visualizing network insecurities", NeurIPS 2019) instead of
    methods. ``image`` may then be several images; one row per image × layer (``layers``,
    default the last spatial one) × choice, where ``insecurities`` is one choice or a list:
    a difficulty (``"entropy"``, ``"cs"``, a hardness predictor), a ``(difficulty,
    attribution)`` pair such as ``("entropy", "gradient_hessian")``, or a dict of options of
    :meth:`~xai_widgets.deliberative.Analysis.result` (:data:`ROW_OPTIONS`). Columns: the
    difficulty map, then the ``pairs`` most insecure class pairs of the row, titled with their
    names and score, their top ``area`` outlined (``style="original"``: the original's
    darkened background). ``top_k`` classes are ranked; one
    :class:`~xai_widgets.deliberative.Analysis` per layer serves every image and choice.
    """

    def __init__(self, model: Any, image: Any,
                 methods: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
                 classes: str | Sequence[Any] | None = None,
                 layers: Sequence[str] | None = None, top_k: int = 5, *,
                 insecurities: Any = None, pairs: int | None = None,
                 area: float | None = None, style: Style | None = None,
                 **settings: Any) -> None:
        self.settings = settings
        self.pair_rows: list[PairRow] = []
        if insecurities is None and (pairs, area, style) != (None, None, None):
            raise ParameterError("pairs=, area= and style= lay out insecurities: give "
                                 "insecurities= too (e.g. insecurities='entropy')")
        if insecurities is not None:
            if methods is not None or classes is not None or settings:
                raise ParameterError(
                    "Compare lays out either explanations (methods=, classes=, render "
                    "settings) or insecurities (insecurities=, pairs=, area=, style=), not "
                    "both; make two Compares")
            self.pairs = _count(3 if pairs is None else pairs)
            self.area = check_area(0.1 if area is None else area)
            style = "ours" if style is None else style
            if style not in STYLES:
                raise ParameterError(f"style must be 'ours' or 'original', got {style!r}")
            self.style: Style = style
            self.pair_rows = _pair_rows(model, image, insecurities, layers, top_k)
            return
        models = list(model) if isinstance(model, (list, tuple)) else [model]
        bundles = {f"{i}:{b.name}": b for i, b in enumerate(ModelBundle.wrap(m) for m in models)}
        self.session = Session(bundles, {"image": image}, threaded=False, top_k=top_k)
        rows = _rows(("grad_cam", "guided_backprop") if methods is None else methods)
        classes = "top3" if classes is None else classes
        self.methods = [get_method(name).name for name, _ in rows]
        first = next(iter(bundles))
        base = self.session.explanation(self.session.resolve({"model": first}))
        self.top = base.top(top_k)[0]
        if len(bundles) > 1:
            self.columns = [(name.split(":", 1)[1], {"model": name}) for name in bundles]
        elif layers is not None:
            self.columns = [(layer, {"layer": layer}) for layer in layers]
        else:
            targets = _targets(classes, self.top)
            self.columns = [(base.bundle.class_name(t) if isinstance(t, int) else str(t),
                             {"target": t}) for t in targets]
        if len(bundles) > 1 or layers is not None:
            target = _targets(classes, self.top)[0]
            self.columns = [(title, {**changes, "target": target})
                            for title, changes in self.columns]
        self.cells: list[list[Selection]] = [
            [self.session.resolve({"method": method, "params": params, **changes})
             for _, changes in self.columns]
            for method, (_, params) in zip(self.methods, rows, strict=True)]
        self.grid: list[list[Explanation]] = [
            [self.session.explanation(selection) for selection in row] for row in self.cells]
        self.areas: AreaTable | None = None
        self._tables: dict[Hashable, AreaTable] = {}

    def metrics(self, pixels_per_step: int | None = None, score: Score = "probability",
                chunk_size: int | None = None, progress: Progress | bool | None = None,
                **options: Any) -> AreaTable:
        """The deletion and insertion areas of every cell (Petsiuk et al., RISE, BMVC 2018),
        as a table: methods × columns, the best of each column in bold.

        Each map ranks the pixels as its cell shows it (the method's display with this
        Compare's settings); the maps that share a column's model input and a map shape go
        through :func:`~xai_widgets.metrics.deletion_insertion` as one batch.
        ``pixels_per_step`` (default: the input width), ``score``, ``chunk_size`` and
        ``options`` (``deletion_substrate``, ``insertion_substrate``, ``channels``,
        ``polarity``) are those of :func:`~xai_widgets.metrics.deletion_insertion`.
        Cached per options; the latest table also shows under the cells of :meth:`figure`.
        A progress bar shows in a terminal or notebook unless ``progress=False``; or pass a
        callable ``progress(fraction, preview)``.
        """
        if self.pair_rows:
            raise ParameterError("metrics() measures explanation maps; a Compare of "
                                 "insecurities has none (see deliberative.part_scores and "
                                 "object_scores to evaluate insecurities)")
        key: Hashable = (pixels_per_step, score, chunk_size, tuple(sorted(options.items())))
        # a tensor or an image as substrate is not a key (a tensor hashes by its id): no cache
        cacheable = all(_plain(value) for value in (pixels_per_step, score, chunk_size,
                                                    *options.values()))
        table = self._tables.get(key) if cacheable else None
        if table is None:
            inputs = [self.session.prepared(s.model, s.image).inputs for s in self.cells[0]]
            with progress_bar("deletion/insertion", enabled=progress is not False) as bar:
                table = area_table(self.grid, inputs, [title for title, _ in self.columns],
                                   settings=self.settings, pixels_per_step=pixels_per_step,
                                   score=score, chunk_size=chunk_size,
                                   progress=progress if callable(progress) else bar, **options)
            if cacheable:
                self._tables[key] = table
        self.areas = table
        return table

    def figure(self, areas: bool = True) -> Figure:
        """The grid as a matplotlib figure: the photo and its top classes, then one captioned
        overlay per cell; with ``areas``, once :meth:`metrics` has run, the latest areas
        under each cell. A Compare of insecurities: one row per image and choice, the
        difficulty map then the most insecure pairs (:meth:`panels`)."""
        if self.pair_rows:
            return self._pair_figure()
        rows, columns = len(self.grid), len(self.columns)
        figure = Figure(figsize=(2.3 * (columns + 1), 2.4 * rows + 0.3), layout="constrained")
        axes = figure.subplots(rows, columns + 1, squeeze=False)
        photo = self.grid[0][0].display[0]
        axes[0][0].imshow(photo)
        axes[0][0].set_title("\n".join(f"{name} {100 * p:.1f}%" for _, name, p in self.top[:4]),
                             fontsize=7, loc="left")
        for row in range(rows):
            axes[row][0].set_axis_off()
            for column, explanation in enumerate(self.grid[row]):
                frame = explanation.render(**self.settings)[0]
                cell = axes[row][column + 1]
                cell.imshow(frame.composite())
                cell.set_xticks([])
                cell.set_yticks([])
                if row == 0:
                    cell.set_title(self.columns[column][0], fontsize=9)
                if column == 0:
                    cell.set_ylabel(explanation.method.label, fontsize=9)
                if areas and self.areas is not None:
                    measured = self.areas.cell(row, column)
                    cell.set_xlabel(f"del {measured.deletion:.2f} · ins "
                                    f"{measured.insertion:.2f}", fontsize=8)
        return figure

    def panels(self) -> list[list[tuple[str, np.ndarray]]]:
        """The pictures of a Compare of insecurities, row by row, each with its title: the
        difficulty map (``result.difficulty_picture()``), then the ``pairs`` most insecure
        pairs (``result.picture(pair, area, style)``), uint8 ``(Hd, Wd, 3)``."""
        if not self.pair_rows:
            raise ParameterError("panels() are the pictures of a Compare of insecurities; "
                                 "this one lays out explanations (see .grid)")
        out = []
        for row in self.pair_rows:
            r = row.result
            top = ", ".join(f"{name} {p:.0%}" for _, name, p in r.classes[:2])
            cells = [(f"difficulty {r.difficulty.score:.3f}\n{top}", r.difficulty_picture())]
            cells += [(f"{pair.names[0]} –\n{pair.names[1]} · {pair.score:.3g}",
                       r.picture(pair, self.area, self.style)) for pair in r.pairs[:self.pairs]]
            out.append(cells)
        return out

    def _pair_figure(self) -> Figure:
        columns = 1 + self.pairs
        rows = len(self.pair_rows)
        figure = Figure(figsize=(2.3 * columns, 2.5 * rows + 0.3), layout="constrained")
        axes = figure.subplots(rows, columns, squeeze=False)
        for row, (pair_row, cells) in enumerate(zip(self.pair_rows, self.panels(),
                                                    strict=True)):
            for column, ax in enumerate(axes[row]):
                if column >= len(cells):  # fewer ambiguous pairs than columns
                    ax.set_axis_off()
                    continue
                title, picture = cells[column]
                ax.imshow(picture)
                ax.set_title(title, fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[row][0].set_ylabel(pair_row.title, fontsize=9)
        kept = f"top {self.area:.0%} " + ("outlined" if self.style == "ours"
                                           else "shown, the rest darkened")
        figure.suptitle(f"insecurities (Wang & Vasconcelos 2019): difficulty map, then the "
                        f"most insecure pairs · {kept}", fontsize=9)
        return figure

    def save(self, path: str | Path, dpi: int = 150) -> Path:
        """Write the figure (``.png``, ``.pdf``, ``.svg``, ``.jpg``) into an existing folder."""
        path = writable_path(path)
        self.figure().savefig(path, dpi=dpi)
        return path


def _rows(methods: Any) -> list[tuple[str, dict[str, Any]]]:
    """Each row of methods as ``(name, params)``: from a name, or a ``(name, params)`` pair."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for method in [methods] if isinstance(methods, str) else list(methods):
        if isinstance(method, str):
            rows.append((method, {}))
        elif isinstance(method, tuple) and len(method) == 2 and isinstance(method[0], str) \
                and isinstance(method[1], Mapping):
            rows.append((method[0], dict(method[1])))
        else:
            raise ParameterError(f"a row of methods is a name or a (name, params) pair such as "
                                 f"('smoothgrad', {{'n_samples': 8}}), not {method!r}")
    if not rows:
        raise ParameterError("Compare needs at least one method, e.g. methods=['grad_cam']")
    return rows


def _targets(classes: str | Sequence[Any], top: list[tuple[int, str, float]]) -> list[Any]:
    if isinstance(classes, str):
        count = top_count(classes, len(top))  # top_k bounds what Compare ranked
        return [classes] if count is None else [index for index, _, _ in top[:count]]
    return list(classes)


def _plain(value: Any) -> bool:
    """Is ``value`` a cache key by value (None, bool, number, string, or a tuple of them)?"""
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _count(pairs: Any) -> int:
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise ParameterError(f"pairs is how many insecure pairs each row shows: an integer "
                             f">= 1, got {pairs!r}")
    return pairs


def _row_options(insecurities: Any) -> list[dict[str, Any]]:
    """Each row of ``insecurities=`` as options of ``Analysis.result``, checked before any
    pass: a difficulty, a ``(difficulty, attribution)`` pair, or a dict of options."""
    rows = insecurities if isinstance(insecurities, list) else [insecurities]
    if not rows:
        raise ParameterError("insecurities= needs at least one row, e.g. 'entropy'")
    out: list[dict[str, Any]] = []
    for row in rows:
        if isinstance(row, Mapping):
            options = dict(row)
        elif isinstance(row, tuple) and len(row) == 2:
            options = {"difficulty": row[0], "attribution": row[1]}
        elif isinstance(row, (str, nn.Module)):
            options = {"difficulty": row}
        else:
            raise ParameterError(
                f"a row of insecurities is a difficulty ('entropy', 'cs', a hardness "
                f"predictor), a (difficulty, attribution) pair such as ('entropy', "
                f"'gradient_hessian'), or a dict of options ({', '.join(ROW_OPTIONS)}); several "
                f"rows go in a list; got {row!r}")
        for key in options:
            if key not in ROW_OPTIONS:
                hint = did_you_mean(str(key), ROW_OPTIONS)
                raise ParameterError(f"unknown option {key!r} in a row of insecurities; "
                                     f"accepted: {', '.join(ROW_OPTIONS)}"
                                     f"{'; ' + hint if hint else ''}")
        check_attribution(options.get("attribution", "gradient"))
        resolve_difficulty(options.get("difficulty", "entropy"), options.get("predictor"),
                           "", options.get("hp_score"))
        out.append(options)
    return out


def _pair_rows(model: Any, images: Any, insecurities: Any, layers: Sequence[str] | None,
               top_k: int) -> list[PairRow]:
    """One :class:`PairRow` per image × layer × row of ``insecurities``."""
    if isinstance(model, (list, tuple)):
        if len(model) != 1:
            raise ParameterError(f"a Compare of insecurities shows one model, got "
                                 f"{len(model)}; make one Compare per model")
        model = model[0]
    options = _row_options(insecurities)
    if isinstance(top_k, int) and not isinstance(top_k, bool) and top_k < 2:
        raise ParameterError(f"top_k={top_k}: a pair needs two classes; give top_k >= 2 (how "
                             "many of the most probable classes the pairs come from)")
    if isinstance(layers, str):
        layers = [layers]
    bundle = ModelBundle.wrap(model)
    wanted: list[str | None] = list(layers) if layers else [None]
    analyses = [Analysis(bundle, images, layer, top_k) for layer in wanted]
    out = []
    for index in range(len(analyses[0])):
        for analysis in analyses:
            for row in options:
                result = analysis.result(index, **row)
                title = " · ".join(
                    ([result.name] if len(analysis) > 1 else [])
                    + ([result.layer] if len(analyses) > 1 else [])
                    + [f"{result.difficulty.kind}, {result.attribution}"]
                    + ([] if result.normalise else ["raw product"]))
                out.append(PairRow(title, result))
    return out
