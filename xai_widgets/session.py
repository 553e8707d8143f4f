"""The Explorer's state, caches and jobs, in pure Python (no widget import).

A :class:`Session` holds what a person chose (a :class:`Selection`), the images and models on
offer, and the caches that make every interaction cheap:

* one :class:`~xai_widgets.trace.TraceSet` per (model, image): a class, layer or method switch
  reuses its forward pass and cached gradients (a class switch costs one partial backward, a
  switch within the Grad-CAM family nothing);
* explanations per selection (LRU), so going back to an earlier choice costs nothing;
* the display settings: a change of colormap, opacity or rendering re-renders the cached raw
  map and runs no method.

Methods whose cost is ``"iterative"`` run as jobs on the :class:`~xai_widgets.jobs.JobRunner`
(one worker thread). A newer request supersedes the older one, which stops at its next chunk;
the last good scene stays on view meanwhile, and further changes apply to what was asked for
(:attr:`Session.requested`), not to what is still on view. Model access is serialised by one
lock per model, which a job releases between chunks, so a quick interaction never waits
longer than one chunk. Explanations are computed by :class:`~xai_widgets.request.Request`,
the same path as ``explain()``.

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
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import torch

from .errors import ImageError, ModelError, ParameterError, XaiError
from .explanation import Explanation
from .images import PreparedBatch, prepare, to_pil
from .jobs import Failed, Finished, Job, JobEvent, JobRunner, Progress, Progressed, Started, Stopped
from .kernels import get_method
from .kernels.spec import LayerName
from .metrics import DeletionInsertion, Sanity, deletion_insertion, sanity_check
from .models import ModelBundle, load_model
from .render import Frame, RenderSettings
from .request import Request
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


Event = Literal["scene", "preview", "status", "progress", "request", "metrics",
                "metrics-progress"]
JobKind = Literal["explain", "curves", "sanity"]


@dataclass
class _Handlers:
    """What the session does with a job's result and, for an explanation, its previews."""

    done: Callable[[Any], None]
    preview: Callable[[float, Any], None] | None = None


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
    MAX_UPLOAD_BYTES = 32 * 2**20
    MAX_UPLOADS = 16

    def __init__(self, models: Mapping[str, ModelBundle | None], images: Mapping[str, Any],
                 method: str = "grad_cam", top_k: int = 5, threaded: bool = True) -> None:
        if not models or not images:
            raise ParameterError("a session needs at least one model and one image, e.g. "
                                 "Session({'mine': bundle}, {'cat': 'cat.jpg'})")
        self.models: dict[str, ModelBundle | None] = dict(models)
        self.images: dict[str, Any] = dict(images)
        self._uploads: list[str] = []  # names of uploaded files, oldest first
        self.top_k = top_k
        self.threaded = threaded
        self.settings: RenderSettings = get_method(method).display
        self.selection = Selection(next(iter(self.images)), next(iter(self.models)), method)
        #: what was asked for last: the selection on view, or one a job is computing
        self.requested = self.selection
        self.scene: Scene | None = None
        self._listeners: list[Callable[[Event, Any], None]] = []
        self._prepared: LRU[tuple[str, str], PreparedBatch] = LRU(8)
        self._traces: LRU[tuple[str, str], TraceSet] = LRU(2)
        self._explanations: LRU[Selection, Explanation] = LRU(32)
        self._curves: LRU[Hashable, DeletionInsertion] = LRU(32)
        self._sanity: LRU[Hashable, Sanity] = LRU(8)
        self.measuring = False
        self.curve_steps = 28
        self.jobs = JobRunner(self._job_event, threaded)
        self._handlers: dict[Job, _Handlers] = {}
        self._last_preview = 0.0

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, listener: Callable[[Event, Any], None]) -> None:
        """``listener(event, payload)``: ``("scene", Scene)``, ``("preview", Scene)`` (an
        iterative method's map so far, at most every :attr:`PREVIEW_INTERVAL` seconds),
        ``("status", (text, level))``
        with level ``"info"``/``"busy"``/``"error"``, ``("progress", fraction or None)`` of
        an explanation job, ``("request", Selection)`` when a job starts computing a new
        selection (controls show what is asked for), ``("metrics", Measured)`` and
        ``("metrics-progress", (kind, fraction or None))``."""
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
        """Add an image (checked now, so a bad upload fails here); returns its unique name.

        Uploaded files (bytes) are kept as they came, at most :attr:`MAX_UPLOAD_BYTES` each
        and :attr:`MAX_UPLOADS` of them (the oldest goes); only the prepared images of the
        last few choices stay decoded."""
        if isinstance(data, (bytes, bytearray)) and len(data) > self.MAX_UPLOAD_BYTES:
            raise ImageError(f"{name!r} is {len(data) / 2**20:.1f} MiB; uploads are limited "
                             f"to {self.MAX_UPLOAD_BYTES // 2**20} MiB: save a smaller copy")
        picture, _ = to_pil(data)  # refuses what cannot be decoded, or is too large decoded
        unique, n = name, 2
        while unique in self.images:
            unique, n = f"{name} ({n})", n + 1
        if isinstance(data, (bytes, bytearray)):
            self.images[unique] = bytes(data)
            self._uploads.append(unique)
            while len(self._uploads) > self.MAX_UPLOADS:
                self.images.pop(self._uploads.pop(0), None)
        else:
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
        base = self.requested
        self._supersede()  # whatever a job computes, it is no longer what is asked for
        try:
            with model_lock(self.bundle(changes.get("model", base.model)).model):
                selection = self.resolve(changes, base)
                if get_method(selection.method).cost == "iterative" and self.threaded \
                        and self._explanations.get(selection) is None:
                    self.requested = selection
                    self._status(f"computing {get_method(selection.method).label}…", "busy")
                    self._emit("request", selection)
                    self._submit_explanation(selection)
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
        live: dict[str, torch.Tensor] = {}
        with model_lock(self.bundle(selection.model).model):
            request = Request.make(
                self.bundle(selection.model), None, spec,
                "top1" if selection.target is None else selection.target,
                selection.layer if spec.takes_layer else None, dict(selection.params),
                batch=self.prepared(selection.model, selection.image),
                traces=self.traces(selection.model, selection.image))

            def report(fraction: float, preview: torch.Tensor | None) -> None:
                if progress is not None:
                    progress(fraction, None if preview is None else
                             request.explanation(preview, request.layer, dict(live)))

            return self._explanations.put(selection, request.run(report, live, warn=False))

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
            self.jobs.drop("curves")
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
        self.jobs.drop()

    @property
    def busy(self) -> bool:
        """True while an explanation job runs or waits."""
        return self.jobs.busy("explain")

    # ------------------------------------------------------------------ internals

    def resolve(self, changes: Mapping[str, Any], current: Selection | None = None
                ) -> Selection:
        """``current`` (default: :attr:`requested`) with ``changes`` applied and checked;
        raises an XaiError when one is refused. Nothing is shown or computed but the
        image's forward pass when a class is named.

        A new image resets the class to the predicted one (unless a class is given); a new
        model resets the layer (and layer-valued parameters) to its default and keeps the
        class only if the class names agree; a new method starts from its default parameters
        and display settings, and a method that finds its own layer (CAM) starts from that one.
        """
        current = self.requested if current is None else current
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
        if selection.model != current.model and "params" not in changes:
            layer_valued = {p.name for p in spec.params if isinstance(p, LayerName)}
            params = {k: v for k, v in params.items() if k not in layer_valued}
        selection = selection.with_params(spec.validate(params))
        if selection.target is not None:
            logits = self.traces(selection.model, selection.image).logits
            selection = replace(selection, target=resolve_targets(
                selection.target, logits, bundle.class_names)[0])
        else:
            self.prepared(selection.model, selection.image)  # checks the image now
        if spec.layer_policy == "optional" and spec.name != current.method \
                and "layer" not in changes:
            selection = replace(selection, layer=None)  # the method's own layer
        # the layer stays chosen across input methods, so that a layer method finds it again
        if spec.layer_policy == "required" or \
                (selection.layer is not None and bundle.layers.candidates):
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
        self.selection = self.requested = scene.selection
        self.scene = scene
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
                    compute: Callable[[Progress], Any]) -> Any:
        """Show the cached result of ``key``, or compute it in a job (the same key already in
        the works is not asked for twice)."""
        cached = cache.get(key)
        if cached is not None:
            self._emit("metrics", Measured(kind, scene.selection, cached))
            return cached
        if any(job.key == key for job in self.jobs.live()):
            return None

        def done(result: DeletionInsertion | Sanity) -> None:
            cache.put(key, result)
            self._emit("metrics", Measured(kind, scene.selection, result))

        self.jobs.drop(kind)
        self._submit(Job(kind, key, compute), scene.selection.model, _Handlers(done))
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

    def _submit_explanation(self, selection: Selection) -> None:
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

        self._submit(Job("explain", selection, lambda progress: self._scene(
            selection, self.explanation(selection, progress))), selection.model,
            _Handlers(done, preview))

    def _submit(self, job: Job, model: str, handlers: _Handlers) -> None:
        """Run ``job`` holding the lock of ``model``, on the worker thread (or now when not
        threaded); ``handlers`` take its result and previews."""
        job.lock = model_lock(self.bundle(model).model)
        self._handlers[job] = handlers
        self.jobs.submit(job)

    def _job_event(self, event: JobEvent) -> None:
        """The job runner's events as the session's: progress, previews, results, errors."""
        job = event.job
        if isinstance(event, (Finished, Failed, Stopped)):
            handlers = self._handlers.pop(job, None)
            if job.kind == "explain" and not isinstance(event, Finished):
                self.requested = self.selection  # what is asked for is what is shown
        else:
            handlers = self._handlers.get(job)
        fraction = event.fraction if isinstance(event, Progressed) else \
            0.0 if isinstance(event, Started) else None
        self._emit(*(("progress", fraction) if job.kind == "explain" else
                     ("metrics-progress", (job.kind, fraction))))
        if isinstance(event, Progressed) and event.preview is not None and \
                handlers is not None and handlers.preview is not None:
            handlers.preview(event.fraction, event.preview)
        elif isinstance(event, Finished) and handlers is not None:
            handlers.done(event.result)
        elif isinstance(event, Failed):
            self._fail(event.error)
