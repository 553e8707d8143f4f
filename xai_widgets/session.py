"""The Explorer's state, caches and jobs, in pure Python (no widget import).

A :class:`Session` holds what a person chose (a :class:`Selection`), the images and models on
offer, and the caches that make every interaction cheap:

* one :class:`~xai_widgets.trace.TraceSet` per (model, image): a class, layer or method switch
  reuses its forward pass and cached gradients (a class switch costs one partial backward, a
  switch within the Grad-CAM family nothing);
* explanations per selection (LRU), so going back to an earlier choice costs nothing;
* the display settings: a change of colormap, opacity or rendering re-renders the cached raw
  map and runs no method.

Methods whose cost is ``"iterative"`` run as jobs on one worker thread. A newer request
supersedes the older one, which stops at its next chunk (its progress callback raises
:class:`~xai_widgets.kernels.spec.Cancelled`); the last good scene stays on view meanwhile.
Model access is serialised by one lock per model, which a job releases between chunks, so a
quick interaction never waits longer than one chunk.

The metrics panel asks for the deletion and insertion curves of the shown map
(:meth:`Session.measure`: while it is on, every new map is measured) and for the sanity check
(:meth:`Session.sanity`); both run as jobs too, after the explanation they judge, are cached
per map, and are cancelled when the map changes.

Views subscribe with :meth:`Session.subscribe`; every event carries a :class:`Scene`, a status
line, a progress fraction, or a :class:`Measured` result. Errors never escape an interaction:
they become a status line and the state stays what it was.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import torch

from .errors import ImageError, ModelError, XaiError
from .explanation import Explanation
from .images import PreparedBatch, prepare, to_pil
from .kernels import get_method
from .kernels.spec import Cancelled, KernelContext
from .metrics import DeletionInsertion, Sanity, deletion_insertion, sanity_check
from .models import ModelBundle, load_model
from .render import Frame, RenderSettings
from .scope import eval_mode, model_lock
from .targets import resolve_targets
from .trace import TraceSet

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A dictionary that keeps its ``size`` most recently used entries."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: K, value: V) -> V:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


@dataclass(frozen=True)
class Selection:
    """What is explained: names of the image and model, the method, the layer (``None``: the
    model's default), the class (``None``: the predicted one) and the method's parameters."""

    image: str
    model: str
    method: str = "grad_cam"
    layer: str | None = None
    target: int | None = None
    params: tuple[tuple[str, Any], ...] = ()

    def with_params(self, params: Mapping[str, Any]) -> Selection:
        return replace(self, params=tuple(sorted(params.items())))


@dataclass
class Scene:
    """Everything a view shows for the current selection: the explanation, its frame (photo,
    heat layer, caption, values), the top classes and, while occluding, the occluded view."""

    selection: Selection
    explanation: Explanation
    frame: Frame
    top: list[tuple[int, str, float]]
    occlusion: Occlusion | None = None

    @property
    def target(self) -> int:
        return self.explanation.targets[0]


@dataclass
class Occlusion:
    """A region hidden from the model: ``box`` (left, top, right, bottom) in display pixels,
    the occluded photo ``image`` (H, W, 3) and the new probability of every top class."""

    box: tuple[int, int, int, int]
    image: np.ndarray
    probabilities: dict[int, float]


MetricKind = Literal["curves", "sanity"]


@dataclass(frozen=True)
class Measured:
    """A metric of the map of ``selection``: ``"curves"`` (a
    :class:`~xai_widgets.metrics.DeletionInsertion`) or ``"sanity"`` (a
    :class:`~xai_widgets.metrics.Sanity`)."""

    kind: MetricKind
    selection: Selection
    result: DeletionInsertion | Sanity


Event = Literal["scene", "preview", "status", "progress", "metrics", "metrics-progress"]
JobKind = Literal["explain", "curves", "sanity"]
#: a job's ``progress(fraction, preview)``: the preview is whatever its work reports
JobProgress = Callable[[float, Any], None]


@dataclass
class _Job:
    """Work for the worker thread: ``compute(progress)`` runs holding the lock of ``model``
    (released between chunks by ``progress``), then ``done(result)`` unless cancelled."""

    kind: JobKind
    key: Hashable
    model: str
    compute: Callable[[JobProgress], Any]
    done: Callable[[Any], None]
    preview: JobProgress | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def progress_event(self, fraction: float | None) -> tuple[Event, Any]:
        if self.kind == "explain":
            return "progress", fraction
        return "metrics-progress", (self.kind, fraction)


class Session:
    """State and caches of one Explorer (see the module docstring).

    ``models``: name -> bundle, or ``None`` to load that zoo name when first chosen.
    ``images``: name -> anything :func:`xai_widgets.images.prepare` accepts.
    ``threaded=False`` runs iterative methods and metrics in the calling thread (tests,
    scripts).
    """

    #: steps per deletion/insertion curve offered by the metrics panel (224 at 224×224 is
    #: RISE's protocol; fewer steps are quicker: 2·steps + 1 forward passes)
    CURVE_STEPS = (14, 28, 56, 112, 224)
    SANITY_STAGES = 8
    PREVIEW_INTERVAL = 0.3  # seconds between two previews of an iterative method

    def __init__(self, models: Mapping[str, ModelBundle | None], images: Mapping[str, Any],
                 method: str = "grad_cam", top_k: int = 5, threaded: bool = True) -> None:
        if not models or not images:
            raise XaiError("a session needs at least one model and one image")
        self.models: dict[str, ModelBundle | None] = dict(models)
        self.images: dict[str, Any] = dict(images)
        self.top_k = top_k
        self.threaded = threaded
        self.settings: RenderSettings = get_method(method).display
        self.selection = Selection(next(iter(self.images)), next(iter(self.models)), method)
        self.scene: Scene | None = None
        self._listeners: list[Callable[[Event, Any], None]] = []
        self._prepared: LRU[tuple[str, str], PreparedBatch] = LRU(8)
        self._traces: LRU[tuple[str, str], TraceSet] = LRU(2)
        self._explanations: LRU[Selection, Explanation] = LRU(32)
        self._curves: LRU[Hashable, DeletionInsertion] = LRU(32)
        self._sanity: LRU[Hashable, Sanity] = LRU(8)
        self.measuring = False
        self.curve_steps = 28
        self._job: _Job | None = None
        self._queue: deque[_Job] = deque()
        self._last_preview = 0.0
        self._worker: threading.Thread | None = None
        self._wake = threading.Condition()

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, listener: Callable[[Event, Any], None]) -> None:
        """``listener(event, payload)``: ``("scene", Scene)``, ``("preview", Scene)`` (an
        iterative method's map so far, at most every :attr:`PREVIEW_INTERVAL` seconds),
        ``("status", (text, level))``
        with level ``"info"``/``"busy"``/``"error"``, ``("progress", fraction or None)`` of
        an explanation job, ``("metrics", Measured)`` and ``("metrics-progress", (kind,
        fraction or None))``."""
        self._listeners.append(listener)

    def _emit(self, event: Event, payload: Any) -> None:
        for listener in list(self._listeners):
            listener(event, payload)

    def _status(self, text: str, level: str = "info") -> None:
        self._emit("status", (text, level))

    # ------------------------------------------------------------------ catalogue

    def bundle(self, name: str) -> ModelBundle:
        """The model ``name``, loaded on first use (zoo names)."""
        if name not in self.models:
            raise ModelError(f"unknown model {name!r}; on offer: {', '.join(self.models)}")
        bundle = self.models[name]
        if bundle is None:
            bundle = self.models[name] = load_model(name)
        return bundle

    def add_image(self, name: str, data: Any) -> str:
        """Add an image (checked now, so a bad upload fails here); returns its unique name."""
        picture, _ = to_pil(data)
        unique, n = name, 2
        while unique in self.images:
            unique, n = f"{name} ({n})", n + 1
        self.images[unique] = picture
        return unique

    def add_model(self, name: str, bundle: ModelBundle) -> None:
        self.models[name] = bundle

    def prepared(self, model: str, image: str) -> PreparedBatch:
        """The image as model input and display array (cached per model and image)."""
        key = (model, image)
        batch = self._prepared.get(key)
        if batch is None:
            if image not in self.images:
                raise ImageError(f"unknown image {image!r}; on offer: {', '.join(self.images)}")
            batch = self._prepared.put(key, prepare(self.images[image],
                                                    self.bundle(model).preprocessing))
        return batch

    def traces(self, model: str, image: str) -> TraceSet:
        """The traces of one image through one model (the two most recent pairs are kept)."""
        key = (model, image)
        traces = self._traces.get(key)
        if traces is None:
            batch = self.prepared(model, image)
            traces = self._traces.put(key, TraceSet(self.bundle(model), batch.inputs))
        return traces

    # ------------------------------------------------------------------ interactions

    def select(self, **changes: Any) -> Scene | None:
        """Change the selection (``image``, ``model``, ``method``, ``layer``, ``target``,
        ``params``) and show it. Returns the new scene, or ``None`` when a job computes it
        or when the change was refused (the status line says why)."""
        self._supersede()  # whatever a job computes, it is no longer what is asked for
        try:
            with model_lock(self.bundle(changes.get("model", self.selection.model)).model):
                selection = self._resolve(self.selection, changes)
                if get_method(selection.method).cost == "iterative" and self.threaded \
                        and self._explanations.get(selection) is None:
                    self._status(f"computing {get_method(selection.method).label}…", "busy")
                    self._submit(self._explain_job(selection))
                    return None
                scene = self._scene(selection, self.explanation(selection))
        except Exception as exc:  # shown in the status line; the last good scene stays
            self._fail(exc)
            return None
        self._show(scene)
        return scene

    def display(self, **changes: Any) -> Scene | None:
        """Change how the current map is shown (``RenderSettings`` fields); runs no method."""
        try:
            settings = self.settings.updated(**changes)
            frame = None if self.scene is None else \
                self.scene.explanation.render(**vars(settings))[0]
        except Exception as exc:
            self._fail(exc)
            return None
        self.settings = settings
        if self.scene is None or frame is None:
            return None
        self._show(replace(self.scene, frame=frame, occlusion=None))
        return self.scene

    def explanation(self, selection: Selection,
                    progress: Callable[[float, Explanation | None], None] | None = None
                    ) -> Explanation:
        """The explanation of a resolved selection (cached). An iterative method calls
        ``progress(fraction, preview)`` between chunks, ``preview`` an Explanation of its map
        so far (with its live series, e.g. the loss, as extras) or ``None``."""
        cached = self._explanations.get(selection)
        if cached is not None:
            return cached
        spec = get_method(selection.method)
        bundle = self.bundle(selection.model)
        batch = self.prepared(selection.model, selection.image)
        traces = self.traces(selection.model, selection.image)
        live: dict[str, torch.Tensor] = {}

        def explained(raw: torch.Tensor, layer: str | None, extras: dict[str, Any]
                      ) -> Explanation:
            return Explanation(
                map=raw.detach().cpu(), method=spec, targets=targets, layer=layer,
                params=dict(selection.params), logits=traces.logits.cpu(),
                display=batch.display, names=batch.names, bundle=bundle, extras=extras)

        def report(fraction: float, preview: torch.Tensor | None) -> None:
            if progress is not None:
                progress(fraction, None if preview is None else
                         explained(preview, layer, dict(live)))

        with model_lock(bundle.model):
            targets = (selection.target,) if selection.target is not None else \
                resolve_targets("top1", traces.logits, bundle.class_names)
            layer = selection.layer if spec.needs_layer else None
            result = spec.compute(KernelContext(traces, targets, layer,
                                                spec.validate(dict(selection.params)), report,
                                                live))
        return self._explanations.put(selection, explained(result.map, result.layer or layer,
                                                           result.extras))

    def occlude(self, box: tuple[float, float, float, float] | None) -> Scene | None:
        """Hide ``box`` (left, top, right, bottom in display pixels) from the model and show
        the new probabilities of the top classes; ``None`` restores the photo."""
        if self.scene is None:
            return None
        try:
            occlusion = None if box is None else self._occlusion(self.scene, box)
        except Exception as exc:
            self._fail(exc)
            return None
        self._show(replace(self.scene, occlusion=occlusion))
        return self.scene

    def value_at(self, x: float, y: float) -> float | None:
        """The shown map's value (after channel reduction and polarity) at a display pixel."""
        if self.scene is None:
            return None
        values = self.scene.frame.values
        row, column = int(y), int(x)
        if 0 <= row < values.shape[0] and 0 <= column < values.shape[1]:
            return float(values[row, column])
        return None

    def cancel(self) -> None:
        """Stop the running job at its next chunk, and drop the waiting ones."""
        self._supersede()
        self._emit("progress", None)
        self._status("cancelled", "info")

    def measure(self, on: bool = True, steps: int | None = None) -> DeletionInsertion | None:
        """Turn the deletion/insertion curves of the shown map on or off (``steps`` per
        curve, one of :attr:`CURVE_STEPS`); while on, every new map is measured. Returns the
        curves when they are known now (cached, or computed in this thread)."""
        if steps is not None:
            if steps not in self.CURVE_STEPS:
                self._status(f"steps per curve: one of {self.CURVE_STEPS}, not {steps}",
                             "error")
                return None
            self.curve_steps = steps
        self.measuring = on
        if not on or self.scene is None:
            self._drop("curves")
            return None
        return self._measure_curves(self.scene)

    def sanity(self, stages: int = SANITY_STAGES) -> Sanity | None:
        """Run the cascading-randomisation sanity check of the shown map (``stages`` groups
        of layers, from the top). Returns it when known now (cached, or not threaded)."""
        if self.scene is None:
            return None
        scene = self.scene
        key = (scene.selection, stages)
        return self._metric_job("sanity", key, scene, self._sanity, lambda progress: sanity_check(
            scene.explanation, self.prepared(scene.selection.model, scene.selection.image).inputs,
            stages=stages, progress=progress))

    def _supersede(self) -> None:
        """Cancel every job: what they compute is no longer what is asked for."""
        self._drop("explain", "curves", "sanity")

    def _live_jobs(self) -> list[_Job]:
        """The running and the waiting jobs that are not cancelled (hold ``_wake``)."""
        return [job for job in (self._job, *self._queue)
                if job is not None and not job.cancelled.is_set()]

    def _drop(self, *kinds: JobKind) -> None:
        with self._wake:
            dropped = [job for job in self._live_jobs() if job.kind in kinds]
            for job in dropped:
                job.cancelled.set()
            self._queue = deque(job for job in self._queue if job.kind not in kinds)
        for kind in {job.kind for job in dropped} - {"explain"}:
            self._emit("metrics-progress", (kind, None))

    @property
    def busy(self) -> bool:
        """True while an explanation job runs or waits."""
        with self._wake:
            return any(job.kind == "explain" for job in self._live_jobs())

    # ------------------------------------------------------------------ internals

    def _resolve(self, current: Selection, changes: Mapping[str, Any]) -> Selection:
        """Apply and check ``changes``; raises an XaiError when one is refused.

        A new image resets the class to the predicted one (unless a class is given); a new
        model resets the layer to its default and keeps the class only if the class names
        agree; a new method starts from its default parameters and display settings.
        """
        unknown = set(changes) - {"image", "model", "method", "layer", "target", "params"}
        if unknown:
            raise XaiError(f"cannot change {', '.join(sorted(unknown))}")
        selection = replace(current, **{k: v for k, v in changes.items() if k != "params"})
        spec = get_method(selection.method)
        bundle = self.bundle(selection.model)
        if selection.model != current.model:
            same_classes = self._class_names(current.model) == bundle.class_names
            selection = replace(selection, layer=changes.get("layer"),
                                target=changes.get("target", current.target
                                                   if same_classes else None))
        if selection.image != current.image and "target" not in changes:
            selection = replace(selection, target=None)
        params = changes.get("params", {} if spec.name != current.method
                             else dict(current.params))
        selection = selection.with_params(spec.validate(params))
        if selection.target is not None:
            logits = self.traces(selection.model, selection.image).logits
            selection = replace(selection, target=resolve_targets(
                selection.target, logits, bundle.class_names)[0])
        else:
            self.prepared(selection.model, selection.image)  # checks the image now
        if spec.needs_layer or bundle.layers.candidates:  # a layer method needs one
            selection = replace(selection, layer=bundle.layers.resolve(selection.layer,
                                                                       bundle.model))
        if spec.name != current.method:
            self.settings = spec.display.updated(opacity=self.settings.opacity)
        return selection

    def _class_names(self, model: str) -> Any:
        bundle = self.models.get(model)
        return None if bundle is None else bundle.class_names

    def _scene(self, selection: Selection, explanation: Explanation) -> Scene:
        frame = explanation.render(**vars(self.settings))[0]
        return Scene(selection, explanation, frame, explanation.top(self.top_k)[0])

    def _show(self, scene: Scene) -> None:
        self.selection, self.scene = scene.selection, scene
        self._emit("scene", scene)
        if self.measuring:
            self._measure_curves(scene)

    def _measure_curves(self, scene: Scene) -> DeletionInsertion | None:
        """The curves of the scene's map as displayed (its channel reduction and polarity
        rank the pixels), with :attr:`curve_steps` steps per curve."""
        inputs = self.prepared(scene.selection.model, scene.selection.image).inputs
        pixels = math.ceil(inputs.shape[-2] * inputs.shape[-1] / self.curve_steps)
        channels, polarity = self.settings.channels, self.settings.polarity
        key = (scene.selection, channels, polarity, pixels)
        return self._metric_job("curves", key, scene, self._curves, lambda progress:
                                deletion_insertion(scene.explanation, inputs,
                                                   pixels_per_step=pixels, channels=channels,
                                                   polarity=polarity, progress=progress))

    def _metric_job(self, kind: MetricKind, key: Hashable, scene: Scene, cache: LRU[Any, Any],
                    compute: Callable[[JobProgress], Any]) -> Any:
        """Show the cached result of ``key``, or compute it in a job (the same key already in
        the works is not asked for twice)."""
        cached = cache.get(key)
        if cached is not None:
            self._emit("metrics", Measured(kind, scene.selection, cached))
            return cached
        with self._wake:
            if any(job.key == key for job in self._live_jobs()):
                return None

        def done(result: DeletionInsertion | Sanity) -> None:
            cache.put(key, result)
            self._emit("metrics", Measured(kind, scene.selection, result))

        self._drop(kind)
        job = _Job(kind, key, scene.selection.model, compute, done)
        self._submit(job)
        return cache.get(key)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, XaiError):
            self._status(str(exc), "error")
        else:
            log.exception("the explorer caught an unexpected error")
            self._status(f"{type(exc).__name__}: {exc}", "error")

    def _occlusion(self, scene: Scene, box: tuple[float, float, float, float]) -> Occlusion:
        selection = scene.selection
        batch = self.prepared(selection.model, selection.image)
        height, width = batch.display.shape[1:3]
        left, right = sorted(round(min(max(v, 0), width)) for v in (box[0], box[2]))
        top, bottom = sorted(round(min(max(v, 0), height)) for v in (box[1], box[3]))
        inputs = batch.inputs.clone()
        scale_y, scale_x = inputs.shape[-2] / height, inputs.shape[-1] / width
        inputs[..., int(top * scale_y):int(np.ceil(bottom * scale_y)),
               int(left * scale_x):int(np.ceil(right * scale_x))] = 0.0  # the mean colour
        bundle = self.bundle(selection.model)
        with model_lock(bundle.model), torch.inference_mode(), eval_mode(bundle.model):
            logits = bundle.model(inputs.to(bundle.device))
        probabilities = logits.float().softmax(dim=1)[0].cpu()
        image = batch.display[0].copy()
        image[top:bottom, left:right] = np.round(np.array(bundle.preprocessing.mean) * 255)
        shown = {i for i, _, _ in scene.top} | {scene.target}
        return Occlusion((left, top, right, bottom), image,
                         {i: float(probabilities[i]) for i in shown})

    # ------------------------------------------------------------------ jobs

    def _explain_job(self, selection: Selection) -> _Job:
        def done(scene: Scene) -> None:
            self._status("", "info")
            self._show(scene)

        def preview(fraction: float, explanation: Explanation) -> None:
            if time.monotonic() - self._last_preview >= self.PREVIEW_INTERVAL:
                scene = self._scene(selection, explanation)
                scene.frame = replace(scene.frame, caption=f"{scene.frame.caption} · "
                                                           f"{fraction:.0%} done")
                self._emit("preview", scene)
                self._last_preview = time.monotonic()

        return _Job("explain", selection, selection.model, lambda progress: self._scene(
            selection, self.explanation(selection, progress)), done, preview)

    def _submit(self, job: _Job) -> None:
        """Queue ``job`` for the worker thread (or run it now when not threaded)."""
        self._emit(*job.progress_event(0.0))
        if not self.threaded:
            self._run(job)
            return
        with self._wake:
            self._queue.append(job)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="xai-widgets-jobs",
                                                daemon=True)
                self._worker.start()
            self._wake.notify()

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue:
                    if not self._wake.wait(timeout=30):
                        self._worker = None
                        return
                job = self._job = self._queue.popleft()
            try:
                self._run(job)
            finally:
                with self._wake:
                    self._job = None

    def _run(self, job: _Job) -> None:
        lock = model_lock(self.bundle(job.model).model)

        def progress(fraction: float, preview: Any) -> None:
            # between two chunks, the threads waiting for the model (an occlusion, a notebook
            # cell) go first: the lock is fair
            with lock.paused():
                if not job.cancelled.is_set():
                    self._emit(*job.progress_event(fraction))
                    if preview is not None and job.preview is not None:
                        job.preview(fraction, preview)
            if job.cancelled.is_set():
                raise Cancelled

        try:
            with lock:
                result = job.compute(progress)
        except Cancelled:
            return
        except Exception as exc:
            self._emit(*job.progress_event(None))
            self._fail(exc)
            return
        if not job.cancelled.is_set():
            self._emit(*job.progress_event(None))
            job.done(result)
