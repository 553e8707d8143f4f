"""Metrics over a folder of images: resumable, shardable, never silent about failures.

The images are the files under the folder (recursively, sorted by relative path) whose
extension Pillow reads; other files are counted as ignored. A shard is
``files[start:stop:stride]`` (Python slicing): ``start=k, stride=n`` for ``k = 0..n-1`` splits
a data set over ``n`` processes or machines, as the inverse-based project's scripts did
(``start_idx``, ``idx_stride``); :func:`~xai_widgets.metrics.summarize` merges their files.

The results file is JSON lines: a header with the settings, then one record per image and
method, appended and flushed as soon as it is computed. Run again with the same settings, it
skips what is already there (a torn last line left by a killed run is cut off first), so an
interrupted and resumed run writes the same file as an uninterrupted one. Each image is
evaluated on its own, so its numbers do not depend on where a run stopped.

An image that cannot be read gets a record ``{"image", "error"}``; a method that fails on an
image (an :class:`~xai_widgets.XaiError`) gets ``{"image", "method", "error"}``. Both are
counted and listed by the summary.

Labels (``labels.csv``): ``image,label`` rows, the label a class index or name (default: the
predicted class). Boxes (``boxes.csv``): ``image,x0,y0,x1,y1`` rows in pixels of the original
file, continuous coordinates (an inclusive ImageNet box ``xmin..xmax`` is ``xmin, xmax + 1``);
several rows for one image are a union. ``image`` is the path relative to the folder or the
file name.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from PIL import Image
from torch import nn

from ..errors import ImageError, ParameterError, XaiError, did_you_mean
from ..explain import explain
from ..explanation import Explanation
from ..images import to_pil
from ..kernels import get_method
from ..kernels.spec import Progress
from ..models import ModelBundle, load_model
from .deletion import KINDS, deletion_insertion
from .pointing import box_to_input, boxes_to_masks, energy_pointing_game, pointing_game
from .sanity import sanity_check
from .subject import MetricError
from .summary import Summary, read_records, summarize
from .tradeoff import tradeoff

METRICS = ("deletion", "insertion", "pointing", "energy_pointing", "tradeoff", "sanity")
FORMAT = 1


@dataclass
class FolderRun:
    """What :func:`evaluate_folder` did: the results file, the summary of everything in it,
    and counts of this run: records ``written``, images ``skipped`` (already done),
    ``failed`` (image, method or None, error), ``ignored`` non-image files, ``plots``."""

    out: Path
    summary: Summary
    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str | None, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)

    def report(self) -> str:
        """A few lines for people: this run's counts, the table of the whole file (with
        every failure in it), the plots."""
        lines = [f"{self.out}: {self.written} records written, {self.skipped} images already "
                 f"done, {len(self.failed)} failed, {len(self.ignored)} non-image files ignored",
                 "", self.summary.table()]
        lines += [f"plot: {p}" for p in self.plots]
        return "\n".join(lines)


def evaluate_folder(
    directory: str | Path, model: ModelBundle | nn.Module | None = None, *,
    methods: Sequence[str] = ("grad_cam",), metrics: Sequence[str] = ("deletion", "insertion"),
    out: str | Path = "results.jsonl", labels: str | Path | None = None,
    boxes: str | Path | None = None, start: int = 0, stop: int | None = None, stride: int = 1,
    layer: str | None = None, method_params: dict[str, dict[str, Any]] | None = None,
    pixels_per_step: int | None = None, deletion_substrate: str = "zeros",
    insertion_substrate: str = "blur", score: str = "probability", tolerance: float = 15.0,
    thresholds: Sequence[float] = (0.0,), sanity_stages: int = 4, chunk_size: int | None = None,
    progress: Progress | bool = True, plots: bool = True,
) -> FolderRun:
    """Evaluate ``methods`` with ``metrics`` on every image of a folder (or of a shard).

    ``model``: default the embedded model. ``metrics``: any of ``deletion``, ``insertion``,
    ``pointing``, ``energy_pointing`` (both need ``boxes``), ``tradeoff``, ``sanity``.
    ``out``: the JSON-lines results file (resumed if it exists). ``layer``/``method_params``:
    for the methods (params by method name). The metric options are those of
    :func:`deletion_insertion`, :func:`pointing_game`, :func:`tradeoff` and
    :func:`sanity_check` (``sanity_stages`` stages). ``progress``: ``True`` draws a text bar
    on stderr, or a callable ``progress(fraction, None)`` (it may raise
    :class:`~xai_widgets.kernels.spec.Cancelled`: the file stays consistent). ``plots``:
    save one PNG per method next to ``out``.
    """
    folder = Path(directory)
    images, ignored = list_images(folder)
    shard = images[_shard(start, stop, stride, len(images))]
    if not shard:
        raise ImageError(f"the shard start={start}, stop={stop}, stride={stride} selects none "
                         f"of the {len(images)} images in {str(folder)!r}")
    bundle = load_model() if model is None else ModelBundle.wrap(model)
    names = [get_method(m.strip() if isinstance(m, str) else m).name for m in methods]
    if not names:
        raise ParameterError("give at least one method, e.g. methods=['grad_cam']")
    chosen = _check_metrics(metrics, boxes)
    label_of = _read_labels(Path(labels)) if labels is not None else {}
    boxes_of = _read_boxes(Path(boxes)) if boxes is not None else {}
    params = {name: dict((method_params or {}).get(name, {})) for name in names}
    options = {"pixels_per_step": pixels_per_step, "deletion_substrate": deletion_substrate,
               "insertion_substrate": insertion_substrate, "score": score,
               "tolerance": tolerance, "thresholds": [float(t) for t in thresholds],
               "sanity_stages": sanity_stages, "chunk_size": chunk_size}
    header = {"kind": "header", "format": FORMAT, "model": bundle.name, "layer": layer,
              "methods": names, "params": params, "metrics": list(chosen),
              "labels": Path(labels).name if labels else None,
              "boxes": Path(boxes).name if boxes else None, "options": options}
    path = Path(out)
    done = _resume(path, header)
    run = FolderRun(path, Summary([], {}), ignored=ignored)
    bar = _TextBar(len(shard)) if progress is True else None
    with path.open("a", encoding="utf-8") as stream:
        if path.stat().st_size == 0:
            _write(stream, header)
        for number, file in enumerate(shard, start=1):
            relative = file.relative_to(folder).as_posix()
            todo = [m for m in names if (relative, m) not in done and (relative, None) not in done]
            if not todo:
                run.skipped += 1
            else:
                _evaluate_image(bundle, file, relative, todo, chosen, run, stream, layer, params,
                                options, label_of, boxes_of)
            if bar is not None:
                bar(number, relative)
            elif callable(progress):
                progress(number / len(shard), None)
    run.summary = summarize(path)
    if plots:
        run.plots = run.summary.save_plots(path.with_suffix(""))
    return run


def list_images(folder: Path) -> tuple[list[Path], list[str]]:
    """The image files under ``folder`` (sorted by relative path) and the other files."""
    if not folder.is_dir():
        raise ImageError(f"{str(folder)!r} is not a folder; give the folder that holds the "
                         "images")
    readable = {ext.lower() for ext in Image.registered_extensions()}
    files = sorted((p for p in folder.rglob("*") if p.is_file()),
                   key=lambda p: p.relative_to(folder).as_posix())
    images = [p for p in files if p.suffix.lower() in readable]
    ignored = [p.relative_to(folder).as_posix() for p in files if p.suffix.lower() not in
               readable]
    if not images:
        raise ImageError(f"no image files in {str(folder)!r} ({len(ignored)} other files); "
                         "accepted: files that Pillow reads (.png, .jpg, .jpeg, .tif, .bmp, "
                         ".webp, ...)")
    return images, ignored


# --------------------------------------------------------------------------- one image


def _evaluate_image(bundle: ModelBundle, file: Path, relative: str, todo: list[str],
                    metrics: tuple[str, ...], run: FolderRun, stream: IO[str],
                    layer: str | None, params: dict[str, dict[str, Any]],
                    options: dict[str, Any], label_of: dict[str, Any],
                    boxes_of: dict[str, list[list[float]]]) -> None:
    try:
        picture, _ = to_pil(file)
        inputs = bundle.prepare(picture).inputs
    except XaiError as exc:
        _fail(run, stream, relative, None, exc)
        return
    label = _lookup(label_of, relative)
    region = None
    if any(m in metrics for m in ("pointing", "energy_pointing")):
        found = _lookup(boxes_of, relative)
        if found is not None:
            boxes = [box_to_input(b, picture.size, bundle.preprocessing) for b in found]
            region = boxes_to_masks([boxes], bundle.preprocessing.crop, 1)
    for method in todo:
        try:
            explanation = explain(bundle, inputs, method, target=label,
                                  layer=layer if get_method(method).needs_layer else None,
                                  **params[method])
            record = {"image": relative, "method": method,
                      "target": explanation.targets[0],
                      "target_name": explanation.target_names[0],
                      "target_from": "prediction" if label is None else "label",
                      "probability": _number(explanation.probabilities[0,
                                                                       explanation.targets[0]])}
            record.update(_measure(explanation, inputs, metrics, options, region))
        except XaiError as exc:
            _fail(run, stream, relative, method, exc)
            continue
        _write(stream, record)
        run.written += 1


def _measure(explanation: Explanation, inputs: torch.Tensor, metrics: tuple[str, ...],
             options: dict[str, Any], region: torch.Tensor | None) -> dict[str, Any]:
    """The record fields of ``metrics`` for one image's explanation."""
    record: dict[str, Any] = {}
    kinds = tuple(k for k in KINDS if k in metrics)
    if kinds:
        result = deletion_insertion(
            explanation, inputs, kinds=kinds, pixels_per_step=options["pixels_per_step"],
            deletion_substrate=options["deletion_substrate"],
            insertion_substrate=options["insertion_substrate"], score=options["score"],
            chunk_size=options["chunk_size"])
        for kind in kinds:
            record[kind] = _number(result[kind].auc[0])
        record["curves"] = {k: [_number(v) for v in result[k].scores[0]] for k in kinds}
        record["curve_step"] = [result.pixels_per_step, int(inputs.shape[-2] * inputs.shape[-1])]
    if "pointing" in metrics:
        hit = None if region is None else pointing_game(
            explanation, masks=region, tolerance=options["tolerance"])
        record["pointing"] = None if hit is None else _number(hit.hits[0])
        record["pointing_distance"] = None if hit is None else _number(hit.distances[0])
    if "energy_pointing" in metrics:
        record["energy_pointing"] = None if region is None else _number(
            energy_pointing_game(explanation, masks=region)[0])
    if "tradeoff" in metrics:
        trade = tradeoff(explanation, inputs, thresholds=options["thresholds"],
                         chunk_size=options["chunk_size"])
        record["thresholds"] = options["thresholds"]
        record["amount"] = [_number(v) for v in trade.amount[0]]
        record["reidentified"] = [int(v) for v in trade.top1[0]]
    if "sanity" in metrics:
        sanity = sanity_check(explanation, inputs, stages=options["sanity_stages"],
                              similarity=("spearman", "spearman_abs", "ssim"))
        for name, values in sanity.final().items():
            record[f"sanity_{name}"] = _number(values[0])
    return record


# --------------------------------------------------------------------------- files


def _resume(path: Path, header: dict[str, Any]) -> set[tuple[str, str | None]]:
    """The (image, method) pairs already in ``path`` (method None: the image failed);
    a torn last line is cut off; a header with other settings is refused."""
    if not path.exists() or path.stat().st_size == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return set()
    raw = path.read_bytes()
    if not raw.endswith(b"\n"):
        with path.open("r+b") as stream:
            stream.truncate(raw.rfind(b"\n") + 1)
    records = read_records(path)
    if not records:
        return set()
    if records[0] != header:
        old = records[0]
        differ = sorted(k for k in {*old, *header} if old.get(k) != header.get(k))
        raise MetricError(f"{str(path)!r} holds results of other settings (they differ in: "
                          f"{', '.join(differ)}); resume with the same settings or write to "
                          "another file")
    return {(str(r["image"]), r.get("method")) for r in records[1:]}


def _write(stream: IO[str], record: dict[str, Any]) -> None:
    stream.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    stream.flush()


def _fail(run: FolderRun, stream: IO[str], image: str, method: str | None,
          exc: Exception) -> None:
    message = f"{type(exc).__name__}: {exc}"
    record: dict[str, Any] = {"image": image, "error": message}
    if method is not None:
        record = {"image": image, "method": method, "error": message}
    _write(stream, record)
    run.failed.append((image, method, message))


def _number(value: Any) -> float | None:
    number = float(value)
    return round(number, 6) if math.isfinite(number) else None


def _read_rows(path: Path, columns: int, what: str) -> list[list[str]]:
    if not path.is_file():
        raise MetricError(f"no {what} file at {str(path)!r}")
    with path.open(newline="", encoding="utf-8") as stream:
        rows = [[c.strip() for c in row] for row in csv.reader(stream) if row]
    if rows and rows[0][0].lower() in ("image", "file", "filename", "path", "name"):
        rows = rows[1:]
    for number, row in enumerate(rows, start=1):
        if len(row) != columns:
            rest = "x0,y0,x1,y1" if columns == 5 else what
            raise MetricError(f"row {number} of {str(path)!r} has {len(row)} columns; a {what} "
                              f"file has {columns}: image,{rest}")
    return rows


def _read_labels(path: Path) -> dict[str, Any]:
    labels: dict[str, Any] = {}
    for image, label in _read_rows(path, 2, "label"):
        labels[image] = int(label) if label.lstrip("-").isdigit() else label
    return labels


def _read_boxes(path: Path) -> dict[str, list[list[float]]]:
    boxes: dict[str, list[list[float]]] = {}
    for image, *corners in _read_rows(path, 5, "box"):
        try:
            box = [float(c) for c in corners]
        except ValueError as exc:
            raise MetricError(f"box of {image!r} in {str(path)!r} is not four numbers: "
                              f"{corners}") from exc
        boxes.setdefault(image, []).append(box)
    return boxes


def _lookup(table: dict[str, Any], relative: str) -> Any:
    """The entry of an image by relative path, else by file name."""
    if relative in table:
        return table[relative]
    return table.get(relative.rsplit("/", 1)[-1])


def _shard(start: int, stop: int | None, stride: int, count: int) -> slice:
    numbers = {"start": start, "stride": stride, **({"stop": stop} if stop is not None else {})}
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ParameterError(f"{name} must be an integer >= 0, got {value!r}")
    if stride < 1:
        raise ParameterError(f"stride must be >= 1, got {stride}")
    return slice(start, stop, stride)


def _check_metrics(metrics: Sequence[str], boxes: Any) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = metrics.split(",")
    metrics = [m.strip() for m in metrics if m.strip()]
    for name in metrics:
        if name not in METRICS:
            hint = did_you_mean(name, METRICS) or f"choose from {', '.join(METRICS)}"
            raise ParameterError(f"unknown metric {name!r}; {hint}")
    if not metrics:
        raise ParameterError(f"give at least one metric: {', '.join(METRICS)}")
    if boxes is None and any(m in metrics for m in ("pointing", "energy_pointing")):
        raise MetricError("the pointing games need the objects' boxes: give boxes= (a CSV "
                          "file of image,x0,y0,x1,y1 rows)")
    return tuple(m for m in METRICS if m in metrics)


class _TextBar:
    """A progress bar on stderr: redrawn in place on a terminal, a line every 10 s in a log."""

    def __init__(self, total: int, stream: IO[str] | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.started = self.shown = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, done: int, note: str) -> None:
        now = time.monotonic()
        if not self.tty and done < self.total and now - self.shown < 10:
            return
        self.shown = now
        each = (now - self.started) / done
        left = int(each * (self.total - done))
        filled = round(24 * done / self.total)
        line = (f"evaluate {done}/{self.total} [{'#' * filled}{'.' * (24 - filled)}] "
                f"{each:.1f} s/image, {left // 60}:{left % 60:02d} left  {note[-40:]}")
        self.stream.write(("\r" + line.ljust(110)) if self.tty else line + "\n")
        if self.tty and done == self.total:
            self.stream.write("\n")
        self.stream.flush()

