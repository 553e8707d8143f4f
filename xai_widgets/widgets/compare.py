"""Compare: one image, a grid of methods × classes (or × layers, or × models), laid out like a
figure of a paper, with the top classes and their probabilities; saves to PNG. ``metrics()``
adds the deletion and insertion areas of every cell (:mod:`xai_widgets.metrics.table`)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..errors import ParameterError
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


class Compare(ShowsFigure):
    """Explanations of one image side by side; every cell shares the traces of its model.

    Rows are ``methods``: names, or ``(name, params)`` pairs for a method with parameters
    of its own (e.g. ``("feature_inversion", {"iterations": 40})``); columns are ``classes``
    (``"topK"`` for the K most probable, or a list of indices/names), or ``layers`` (one
    class), or the models when ``model`` is a list.
    ``settings`` are :class:`~xai_widgets.render.RenderSettings` fields applied to every cell
    (each method keeps its own default rendering otherwise).
    """

    def __init__(self, model: Any, image: Any,
                 methods: Sequence[str | tuple[str, dict[str, Any]]] = ("grad_cam",
                                                                        "guided_backprop"),
                 classes: str | Sequence[Any] = "top3",
                 layers: Sequence[str] | None = None, top_k: int = 5, **settings: Any) -> None:
        models = list(model) if isinstance(model, (list, tuple)) else [model]
        bundles = {f"{i}:{b.name}": b for i, b in enumerate(ModelBundle.wrap(m) for m in models)}
        self.session = Session(bundles, {"image": image}, threaded=False, top_k=top_k)
        rows = _rows(methods)
        self.methods = [get_method(name).name for name, _ in rows]
        self.settings = settings
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
        under each cell."""
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
