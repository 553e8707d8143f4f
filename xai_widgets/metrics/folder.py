"""Metrics over a folder of images: resumable, shardable, locked, never silent about failures.

The images are the files under the folder (recursively, sorted by relative path) whose
extension Pillow reads; other files are counted as ignored, and the evaluation's own outputs
(a results file, its lock and its plots, wherever they lie) are never taken for images. A
shard is ``files[start:stop:stride]`` (Python slicing): ``start=k, stride=n`` for
``k = 0..n-1`` splits a data set over ``n`` processes or machines, as the inverse-based
project's scripts did (``start_idx``, ``idx_stride``); :func:`~xai_widgets.metrics.summarize`
merges their files.

The results file is JSON lines: a header with the settings (:class:`.EvaluationSettings`),
the model's name and a SHA-256 of its weights, then one record per image and method, appended
and flushed as soon as it is computed; an ``out`` ending in ``.parquet`` is a Parquet data set
of the same records instead (:mod:`.parquet`: parts written as the run goes, the records not
yet in a part journaled in JSON lines, so that everything below holds for it too). Run
again with the same settings and model, it skips what is already there (a torn last line
left by a killed run is cut off first), so an interrupted and resumed run writes the same
file as an uninterrupted one; other settings, another shard, seed or weights are refused.
Each image is evaluated on its own, so its numbers do not depend on where a run stopped. A
file that is not a results file is refused unchanged, and while a run writes ``out`` it holds
``out.lock`` (released when the process ends, however it ends): a second run on the same
``out`` stops at once with an error naming it.

An image that cannot be read (whatever the exception) gets a record ``{"image", "error"}``;
a method or metric that fails on an image gets ``{"image", "method", "error"}``. Both are
counted and listed by the summary. Warnings raised while an image is explained and measured
(e.g. a constant map, whose pixels tie: :class:`~xai_widgets.errors.MetricWarning`) go into
its record as ``"warnings"``. File names that are not valid UTF-8 are kept exactly (as JSON
escapes).

Labels (``labels.csv``): ``image,label`` rows, the label a class index or name (default: the
predicted class). Boxes (``boxes.csv``): ``image,x0,y0,x1,y1`` rows in pixels of the original
file, continuous coordinates (an inclusive ImageNet box ``xmin..xmax`` is ``xmin, xmax + 1``);
several rows for one image are a union. ``image`` is the path relative to the folder or the
file name; a first row starting with ``image`` (or ``file``, ``filename``, ``path``, ``name``)
is a header.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from PIL import Image
from torch import nn

from .. import distributed
from ..errors import ImageError, MetricError
from ..explain import explain
from ..images import to_pil
from ..kernels import REGISTRY as METHODS
from ..kernels import get_method
from ..kernels.spec import Progress
from ..models import ModelBundle, load_model
from ..progress import items_bar
from . import parquet
from .pointing import box_to_input, boxes_to_masks, check_box
from .registry import get_metric
from .settings import EvaluationSettings
from .spec import Case, Measure, number
from .summary import Summary, parse_header, printable, read_records, summarize

FORMAT = 2


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
        every failure and warning in it), the plots."""
        lines = [f"{printable(str(self.out))}: {self.written} records written, {self.skipped} "
                 f"images already done, {len(self.failed)} failed, {len(self.ignored)} "
                 "non-image files ignored", "", self.summary.table()]
        lines += [f"plot: {printable(str(p))}" for p in self.plots]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def evaluate_folder(directory: str | Path, model: ModelBundle | nn.Module | None = None,
                    settings: EvaluationSettings | None = None, *,
                    out: str | Path = "results.jsonl", progress: Progress | bool = True,
                    plots: bool = True, client: Any = None, task_size: int = 4,
                    **changes: Any) -> FolderRun:
    """Evaluate methods with metrics on every image of a folder (or of a shard).

    ``model``: default the embedded model. ``settings``: an :class:`.EvaluationSettings`
    (methods, metrics, layer, method parameters, labels, boxes, shard, seed, metric options),
    updated by ``changes`` (its field names as keywords, e.g. ``methods=["grad_cam"],
    metrics=["deletion", "insertion"], pixels_per_step=64``); every setting is checked before
    the first image. ``out``: the JSON-lines results file, or a Parquet data set for a name
    ending in ``.parquet`` (:mod:`.parquet`), resumed if it exists. ``progress``: ``True``
    shows a bar (tqdm: text in a terminal, a widget in a notebook), ``False`` none, or a
    callable ``progress(fraction, None)`` called after every image (it may raise
    :class:`~xai_widgets.kernels.spec.Cancelled`: the file stays consistent). ``plots``: save
    one PNG per method next to ``out``. ``client``: a Dask ``distributed.Client`` to run the
    images on its workers, ``task_size`` images per task (:mod:`xai_widgets.distributed`: the
    same file as without it; the bar shows the cluster's dashboard).
    """
    settings = (settings or EvaluationSettings()).updated(**changes)
    distributed.check_task_size(task_size)
    path = Path(out)
    _check_out(path)
    label_of = _read_labels(settings.labels) if settings.labels is not None else {}
    boxes_of = _read_boxes(settings.boxes) if settings.boxes is not None else {}
    bundle = load_model() if model is None else ModelBundle.wrap(model)
    settings.check(bundle)
    folder = Path(directory)
    images, ignored = list_images(folder, out=path)
    shard = images[settings.shard()]
    if not shard:
        raise ImageError(f"the shard start={settings.start}, stop={settings.stop}, stride="
                         f"{settings.stride} selects none of the {len(images)} images in "
                         f"{printable(str(folder))!r}")
    header = {"kind": "header", "format": FORMAT,
              "model": {"name": bundle.name, "weights_sha256": model_digest(bundle.model)},
              **settings.header()}
    run = FolderRun(path, Summary([], {}), ignored=ignored)
    with _locked(path):
        journal, done, parts = _open(path, header)
        with journal.open("ab") as stream, \
                items_bar("evaluate", len(shard), progress is True, client) as bar:
            if journal.stat().st_size == 0:
                _write(stream, header)
            items: list[tuple[Path, str, list[str]]] = []
            for file in shard:
                relative = file.relative_to(folder).as_posix()
                todo = [m for m in settings.methods
                        if (relative, m) not in done and (relative, None) not in done]
                if todo:
                    items.append((file, relative, todo))
            run.skipped = len(shard) - len(items)
            bar.update(run.skipped)
            job = _Job(bundle, settings, label_of, boxes_of)
            setup = functools.partial(distributed.placed, job, bundle.model)
            computed = distributed.run(items, setup, _Job.images, client=client,
                                       task_size=task_size if client else 1, done=bar.update)
            try:
                for position, records in enumerate(computed, start=run.skipped + 1):
                    for record in records:
                        _write(stream, record)
                        if parts is not None:
                            parts.add(record)
                        if "error" in record:
                            run.failed.append((record["image"], record.get("method"),
                                               record["error"]))
                        else:
                            run.written += 1
                    if callable(progress):
                        progress(position / len(shard), None)
            finally:
                if parts is not None:
                    parts.flush()
    run.summary = summarize(path)
    if plots:
        run.plots = run.summary.save_plots(path.with_suffix(""))
    return run


def list_images(folder: Path, out: Path | None = None) -> tuple[list[Path], list[str]]:
    """The image files under ``folder`` (sorted by relative path) and the other files; the
    evaluation's own outputs (``out``, its lock, and plots of results files) are neither."""
    if not folder.is_dir():
        raise ImageError(f"{printable(str(folder))!r} is not a folder; give the folder that "
                         "holds the images")
    readable = {ext.lower() for ext in Image.registered_extensions()}
    own = set() if out is None else {out.resolve(), _lock_path(out).resolve()}
    files = sorted((p for p in folder.rglob("*") if p.is_file() and not _ours(p, own)
                    and not own.intersection(p.resolve().parents)),
                   key=lambda p: p.relative_to(folder).as_posix())
    images = [p for p in files if p.suffix.lower() in readable]
    ignored = [p.relative_to(folder).as_posix() for p in files if p.suffix.lower() not in
               readable]
    if not images:
        raise ImageError(f"no image files in {printable(str(folder))!r} ({len(ignored)} other "
                         "files); accepted: files that Pillow reads (.png, .jpg, .jpeg, .tif, "
                         ".bmp, .webp, ...)")
    return images, ignored


def model_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state (every parameter and buffer: name, dtype, shape, bytes):
    the identity of its weights, e.g. of a model drawn at random with ``--weights none``."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        values = tensor.detach().cpu().contiguous().flatten()
        digest.update(f"{name}:{values.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(values.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- one image


class _Job:
    """Explains and measures the images of one run: their records, errors included."""

    def __init__(self, bundle: ModelBundle, settings: EvaluationSettings,
                 label_of: dict[str, Any], boxes_of: dict[str, list[list[float]]]) -> None:
        self.bundle, self.settings = bundle, settings
        self.label_of, self.boxes_of = label_of, boxes_of
        self.params = settings.params()
        specs = [get_metric(name) for name in settings.metrics]
        self.needs_boxes = any(spec.needs_boxes for spec in specs)
        grouped: dict[Measure, list[str]] = {}
        for spec in specs:  # metrics that share a function (deletion, insertion) share a call
            grouped.setdefault(spec.measure, []).append(spec.name)
        self.measures = {measure: tuple(names) for measure, names in grouped.items()}

    def images(self, chunk: list[tuple[Path, str, list[str]]]) -> list[list[dict[str, Any]]]:
        """The records of each image of ``chunk`` (file, relative path, methods to run)."""
        return [self.image(file, relative, todo) for file, relative, todo in chunk]

    def image(self, file: Path, relative: str, todo: list[str]) -> list[dict[str, Any]]:
        """Explain and measure one image with the methods ``todo``: a record each, or one
        error record for the image when it cannot be read."""
        try:  # any failure to read one image is that image's record, never the run's end
            picture, _ = to_pil(file)
            inputs = self.bundle.prepare(picture).inputs
            region = self._region(relative, picture.size) if self.needs_boxes else None
        except Exception as exc:
            return [{"image": relative, "error": _message(exc)}]
        label = _lookup(self.label_of, relative)
        records: list[dict[str, Any]] = []
        for method in todo:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    record = self._measure(inputs, region, method, label)
                except Exception as exc:  # this method on this image: its error record
                    records.append({"image": relative, "method": method,
                                    "error": _message(exc)})
                    continue
            notes = list(dict.fromkeys(str(w.message) for w in caught))
            records.append({"image": relative, "method": method, **record,
                            **({"warnings": notes} if notes else {})})
        return records

    def _measure(self, inputs: torch.Tensor, region: torch.Tensor | None, method: str,
                 label: Any) -> dict[str, Any]:
        settings = self.settings
        explanation = explain(self.bundle, inputs, method, target=label,
                              layer=settings.layer if get_method(method).takes_layer else None,
                              **self.params[method])
        target = explanation.targets[0]
        record: dict[str, Any] = {
            "target": target, "target_name": explanation.target_names[0],
            "target_from": "prediction" if label is None else "label",
            "probability": number(explanation.probabilities[0, target])}
        case = Case(explanation, inputs, region, settings)
        for measure, names in self.measures.items():
            record.update(measure(case, names))
        return record

    def _region(self, relative: str, size: tuple[int, int]) -> torch.Tensor | None:
        """The object of an image ``(1, H, W)`` from its boxes; ``None``: it has none."""
        found = _lookup(self.boxes_of, relative)
        if found is None:
            return None
        preprocessing = self.bundle.preprocessing
        boxes = [box_to_input(b, size, preprocessing) for b in found]
        return boxes_to_masks([boxes], preprocessing.crop, 1)


def _message(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- files


def _check_out(path: Path) -> None:
    """Refuse, changing nothing, an ``out`` that is a folder or a file that is not ours (for
    Parquet: a file, or a folder that is not a Parquet results folder)."""
    if parquet.is_parquet(path):
        parquet.require()
        if path.is_file() or (path.is_dir() and any(path.iterdir()) and not (
                (path / parquet.PENDING).is_file() or parquet.parts(path))):
            raise MetricError(f"{printable(str(path))!r} exists and is not a Parquet results "
                              "folder (a Parquet output is a folder of parts); it was left as "
                              "it is: give another out, or remove it yourself")
        return
    if path.is_dir():
        raise MetricError(f"out={printable(str(path))!r} is a folder; out is the results file "
                          f"to write, e.g. {printable(str(path / 'results.jsonl'))!r}")
    if path.is_file():
        with path.open("rb") as stream:
            first = stream.readline(1 << 20)
        if first and first.endswith(b"\n") and parse_header(first) is None:
            raise MetricError(f"{printable(str(path))!r} exists and is not a results file (its "
                              "first line is not an evaluation's header); it was left as it "
                              "is: give another out, or remove the file yourself")


def _ours(file: Path, own: set[Path]) -> bool:
    """Is ``file`` an output of an evaluation: one of ``own`` (this run's results file and
    lock), or the plot ``<stem>.<method>.png`` of a results file ``<stem>.*`` beside it?"""
    if file.resolve() in own:
        return True
    stem, _, method = file.stem.rpartition(".")
    if file.suffix.lower() != ".png" or method not in METHODS or not stem:
        return False
    return any(_is_results_file(sibling) for sibling in file.parent.iterdir()
               if sibling.name.startswith(stem + ".") and sibling.suffix.lower() != ".png")


def _is_results_file(path: Path) -> bool:
    if path.is_dir():
        path = path / parquet.PENDING
    try:
        with path.open("rb") as stream:
            return parse_header(stream.readline(1 << 20)) is not None
    except OSError:
        return False


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold ``<out>.lock`` (an advisory lock that the system drops when the process ends)
    while the body writes ``path``; another holder is a :class:`MetricError`."""
    lock = _lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # the lock file may be removed between our open and our lock
        stream = lock.open("a+")
        try:
            _try_lock(stream)
        except OSError:
            stream.seek(0)
            holder = stream.read().strip() or "another process"
            stream.close()
            raise MetricError(
                f"{printable(str(path))!r} is being written by another run ({holder} holds "
                f"the lock file {printable(str(lock))!r}); wait for it to end, or write to "
                "another out") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(stream.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        stream.close()
    else:
        raise MetricError(f"could not take the lock file {printable(str(lock))!r}: it keeps "
                          "being replaced; is another run starting on the same out?")
    try:
        stream.truncate(0)
        stream.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        stream.flush()
        yield
    finally:
        lock.unlink(missing_ok=True)
        stream.close()


def _try_lock(stream: IO[str]) -> None:
    """Lock ``stream``'s file without waiting; ``OSError`` if another process holds it."""
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(stream.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _open(path: Path, header: dict[str, Any]
          ) -> tuple[Path, set[tuple[str, str | None]], parquet.Parts | None]:
    """The JSON-lines file to append to, the (image, method) pairs already done (method
    None: the image failed) and, for a Parquet ``path``, its :class:`.parquet.Parts`.
    Everything is checked before anything changes (:func:`_resume`)."""
    if not parquet.is_parquet(path):
        return path, _keys(_resume(path, header)), None
    path.mkdir(exist_ok=True)
    in_parts: set[tuple[str, str | None]] = set()
    for part in parquet.parts(path):
        found, records = parquet.read_part(part)
        _check_header(part, found, header)
        in_parts |= _keys(records)
    journal = path / parquet.PENDING
    pending = _resume(journal, header)
    if in_parts & _keys(pending):  # killed between writing a part and cutting the journal
        pending = [r for r in pending if _key(r) not in in_parts]
        journal.write_bytes(b"".join(_encode(r) for r in [header, *pending]))
    return journal, in_parts | _keys(pending), parquet.Parts(path, header, pending)


def _key(record: dict[str, Any]) -> tuple[str, str | None]:
    return str(record["image"]), record.get("method")


def _keys(records: Any) -> set[tuple[str, str | None]]:
    return {_key(r) for r in records}


def _check_header(path: Path, old: dict[str, Any], header: dict[str, Any]) -> None:
    if old != header:
        differ = sorted(k for k in {*old, *header} if old.get(k) != header.get(k))
        raise MetricError(f"{printable(str(path))!r} holds results of other settings (they "
                          f"differ in: {', '.join(differ)}); resume with the same settings "
                          "and model, or write to another file")


def _resume(path: Path, header: dict[str, Any]) -> list[dict[str, Any]]:
    """The records already in ``path`` (a JSON-lines file; created empty if missing).

    Everything is checked before anything changes: a file that is not ours, a damaged line or
    a header with other settings is refused as it is; then a torn last line (a killed run) is
    cut off."""
    if not path.exists():
        path.touch()
        return []
    raw = path.read_bytes()
    complete = raw[:raw.rfind(b"\n") + 1]
    if not complete and _encode(header).startswith(raw):
        path.write_bytes(b"")  # only a torn header: the run wrote nothing else
        return []
    records = read_records(path, complete)
    _check_header(path, records[0], header)
    if len(complete) < len(raw):
        with path.open("r+b") as stream:
            stream.truncate(len(complete))
    return records[1:]


def _encode(record: dict[str, Any]) -> bytes:
    """One JSON line, UTF-8. A file name that is not valid UTF-8 (``os.fsdecode`` keeps its
    bytes as lone surrogates) is written as the JSON escapes ``\\udcXX``, which read back as
    the same name."""
    text = json.dumps(record, ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8", "backslashreplace") + b"\n"


def _write(stream: IO[bytes], record: dict[str, Any]) -> None:
    stream.write(_encode(record))
    stream.flush()


def _read_rows(path: Path, columns: int, what: str) -> list[list[str]]:
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            rows = [[c.strip() for c in row] for row in csv.reader(stream) if row]
    except UnicodeDecodeError as exc:
        raise MetricError(f"the {what} file {printable(str(path))!r} is not UTF-8 text; give "
                          "a CSV file") from exc
    if rows and rows[0][0].lower() in ("image", "file", "filename", "path", "name"):
        rows = rows[1:]
    for position, row in enumerate(rows, start=1):
        if len(row) != columns:
            rest = "x0,y0,x1,y1" if columns == 5 else what
            raise MetricError(f"row {position} of {printable(str(path))!r} has {len(row)} "
                              f"columns; a {what} file has {columns}: image,{rest}")
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
            check_box(box)
        except ValueError as exc:
            raise MetricError(f"the box of {image!r} in {printable(str(path))!r} is not four "
                              f"finite numbers: {corners}") from exc
        boxes.setdefault(image, []).append(box)
    return boxes


def _lookup(table: dict[str, Any], relative: str) -> Any:
    """The entry of an image by relative path, else by file name."""
    if relative in table:
        return table[relative]
    return table.get(relative.rsplit("/", 1)[-1])
