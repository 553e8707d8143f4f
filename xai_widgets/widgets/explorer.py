"""The Explorer: pick an image, a model, a layer, a class and a method; the map updates inline.

The app is a plain object that owns its root box (``explorer.widget``) and displays through
it. All state and caches live in a :class:`~xai_widgets.session.Session`; this module only
turns control changes into session calls and session events into pictures and text, so the
whole app can be tested without a browser by setting control values.

Two views share the picture (the "view" toggle, or ``view_mode=``): the heat ``"map"`` of the
chosen method and class, and ``"insecurities"`` (deliberative explanations, Wang &
Vasconcelos, NeurIPS 2019): an :class:`~xai_widgets.widgets.insecurity_panel.InsecurityPanel`
on the Explorer's image and model, at the Explorer's layer (the chosen one, or the one the map
was computed at; the model's default, its last spatial layer, when the method takes none). Its
:class:`~xai_widgets.deliberative.Analysis` reuses the session's traces of the image, so the
view runs no forward pass of its own, and a class switch costs it nothing.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import torch

from ..deliberative import Analysis
from ..errors import ParameterError, XaiError
from ..figures import figure_png
from ..images import sample_images
from ..kernels import REGISTRY, get_method
from ..models import EMBEDDED, ZOO, ModelBundle, load_model, weights_on_disk
from ..request import empty_map_message
from ..scope import model_lock
from ..session import Scene, Selection, Session
from . import insecurity_panel, static
from .canvas import CanvasView
from .controls import STYLE, WIDE, ClassList, DisplayControls, parameter_controls
from .insecurity_panel import DIFFICULTY_MAP, InsecurityPanel
from .metrics_panel import MetricsPanel, show_png

DRAG_INTERVAL = 0.1  # seconds between two live occlusion updates while dragging
LOSS_SIZE, LOSS_DPI = (4.2, 1.5), 100  # the loss curve of an optimisation: 420 × 150 pixels
VIEWS = ("map", "insecurities")
HIDDEN = "none"

# The live app hides its static copy (kept for notebooks viewed without a kernel).
CSS = f"""<style>
.xai-status {{ white-space: normal; overflow-wrap: anywhere; max-width: 440px; }}
.xai-status .widget-html-content, .xai-metrics .widget-html-content {{
  white-space: normal; line-height: 1.3; }}
.xai-status-error {{ color: #b00020; }}
.xai-status-warning {{ color: #8a5a00; }}
.xai-status-busy {{ color: #555; font-style: italic; }}
{insecurity_panel.CSS}
{static.CSS}
</style>"""


class Explorer:
    """Explore explanations of one or more classifiers on images, inline.

    >>> Explorer()                                    # embedded EfficientNet-Lite0 + photos
    >>> Explorer(my_model, images=[img, "cat.jpg"])   # any classifier, any images

    ``model``: a bundle, an ``nn.Module``, a zoo name, or a list of those (first one shown);
    ``images``: a list (or name -> image mapping) added before the sample photos;
    ``zoo``: also offer the torchvision zoo (weights download on first use);
    ``threaded=False`` computes iterative methods (and the insecurities' integrated
    gradients) in the calling thread; ``view_mode``: ``"map"`` or ``"insecurities"``, the view
    shown first.
    """

    def __init__(self, model: Any = None, images: Sequence[Any] | Mapping[str, Any] | None = None,
                 method: str = "grad_cam", *, top_k: int = 5, zoo: bool = True,
                 threaded: bool = True, width: int = 448, view_mode: str = "map") -> None:
        if view_mode not in VIEWS:
            raise ParameterError(f"view_mode is 'map' (the heat map of a method) or "
                                 f"'insecurities' (where the network hesitates between "
                                 f"classes), got {view_mode!r}")
        self.session = Session(_models(model, zoo), _images(images), method, top_k, threaded)
        self.view = CanvasView(width)
        self.width = width
        self.static = static.StaticCopy(self.view, self._caption_text, width)
        self._local = threading.local()  # per thread: is it setting controls itself?
        self._last_drag = 0.0
        self._trailing: threading.Timer | None = None
        self._view_lock = threading.RLock()
        self._param_controls: dict[str, widgets.ValueWidget] = {}
        self._layers_of: str | None = None
        self._params_of: tuple[str, str] | None = None  # (method, model) of the controls
        self._insecurity_key: tuple[str, str, str | None] | None = None
        self._build()
        self.session.subscribe(self._event)
        self.session.select()
        self.view_mode.value = view_mode

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        session = self.session
        self.view_mode = widgets.ToggleButtons(
            options=[("heat map", "map"), ("insecurities", "insecurities")], value="map",
            description="view", style={**STYLE, "button_width": "112px"},
            tooltips=["the chosen method's map of the chosen class",
                      "where, and between which classes, the network hesitates "
                      "(deliberative explanations)"])
        self.image = widgets.Dropdown(options=list(session.images), description="image",
                                      style=STYLE, layout=widgets.Layout(width="205px"))
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="upload",
                                         layout=widgets.Layout(width="92px"))
        self.model = widgets.Dropdown(
            options=[(name if bundle is not None or weights_on_disk(name) else
                      f"{name} (downloads weights)", name)
                     for name, bundle in session.models.items()],
            description="model", style=STYLE, layout=WIDE)
        self.method = widgets.Dropdown(options=[(s.label, s.name) for s in REGISTRY.values()],
                                       value=session.selection.method, description="method",
                                       style=STYLE, layout=WIDE)
        self.method_help = widgets.HTML(layout=widgets.Layout(width="300px"))
        self.params = widgets.VBox()
        self.layer = widgets.Dropdown(description="layer", style=STYLE, layout=WIDE)
        self.all_layers = widgets.Checkbox(value=False, description="all layers", indent=False,
                                           layout=widgets.Layout(width="300px"))
        self.classes = ClassList(session.top_k, lambda index: self._select(target=index))
        self.display_controls = DisplayControls(self._display)
        self.caption = widgets.HTML()
        self.caption.add_class("xai-caption")
        self.readout = widgets.HTML("<i>hover over the picture to read the map; drag to hide "
                                    "a region from the model</i>")
        self.reset = widgets.Button(description="show whole image", icon="undo",
                                    layout=widgets.Layout(width="160px"))
        self.progress = widgets.FloatProgress(min=0, max=1, layout=widgets.Layout(
            width="300px", display="none"))
        self.cancel = widgets.Button(description="cancel", icon="stop", layout=widgets.Layout(
            width="90px", display="none"))
        self.status = widgets.HTML(layout=widgets.Layout(width=f"{self.width}px"))
        self.status.add_class("xai-status")
        self.loss_plot = widgets.Image(format="png", layout=widgets.Layout(display="none"))
        self.loss_plot.add_class("xai-loss")
        self._loss_shown: torch.Tensor | None = None
        self.metrics = MetricsPanel(session)
        self.insecurity = InsecurityPanel(self.view, threaded=session.threaded,
                                          lock=self._view_lock)
        self.insecurity.active = False

        self.image.observe(lambda c: self._select(image=c["new"]), names="value")
        self.model.observe(lambda c: self._select(model=c["new"]), names="value")
        self.method.observe(lambda c: self._select(method=c["new"]), names="value")
        self.layer.observe(lambda c: self._select(layer=c["new"]), names="value")
        self.all_layers.observe(lambda _c: self._offer_layers(), names="value")
        self.upload.observe(self._uploaded, names="value")
        self.view_mode.observe(lambda c: self._switch_view(c["new"]), names="value")
        self.reset.on_click(lambda _b: self._clear_occlusion())
        self.cancel.on_click(lambda _b: session.cancel())
        self.view.on_hover = self._hover
        self.view.on_click = self._pinned
        self.view.on_drag = self._dragged

        method = widgets.VBox([self.method, self.method_help, self.params])
        job = widgets.VBox([widgets.HBox([self.progress, self.cancel]), self.loss_plot])
        # what only one of the two views shows
        self._map_only = [method, self.display_controls.widget, self.caption, self.reset, job,
                          self.metrics.widget]
        self._insecurities_only = [self.insecurity.controls, self.insecurity.caption]
        for box in self._insecurities_only:
            box.layout.display = HIDDEN
        controls = widgets.VBox([
            self.view_mode, widgets.HBox([self.image, self.upload]), self.model, method,
            self.layer, self.all_layers, self.classes.widget, self.display_controls.widget,
            self.insecurity.controls,
        ], layout=widgets.Layout(width="320px", flex="0 0 320px"))  # never squeezed
        picture = widgets.VBox([self.view.widget, self.caption, self.insecurity.caption,
                                self.readout, self.reset, job, self.status, self.metrics.widget],
                               layout=widgets.Layout(flex="0 0 auto", min_width=f"{self.width}px"))
        self.widget = widgets.HBox([widgets.HTML(CSS), controls, picture])
        self.widget.add_class("xai-explorer")

    def _ipython_display_(self) -> None:
        """Show the live app, and after it a static copy of its picture (plain HTML, kept
        up to date through its display id). The app's stylesheet hides the copy; a notebook
        rendered without a kernel or without widget support (nbconvert, GitHub) shows it."""
        self.static.display(self.widget)

    def static_html(self) -> str:
        """The current picture and caption (of the view on show) as self-contained HTML."""
        return self.static.html()

    def _caption_text(self) -> str:
        if self.view_mode.value == "insecurities":
            return self.insecurity.caption_text
        return self.session.scene.frame.caption if self.session.scene else ""

    @property
    def _syncing(self) -> bool:
        """True while this thread sets the controls to what the session shows: their change
        events are echoes, not choices. Per thread, so that a person's change arriving on the
        comm thread while the job worker syncs the controls is never mistaken for one."""
        return bool(getattr(self._local, "syncing", False))

    @_syncing.setter
    def _syncing(self, value: bool) -> None:
        self._local.syncing = value

    # ------------------------------------------------------------------ control -> session

    def _select(self, **changes: Any) -> None:
        if self._syncing:
            return
        self.view.set_box(None)
        scene = self.session.select(**changes)
        if scene is None and self.session.scene is not None:
            with self._view_lock:  # refused, or a job computes it: show what is asked for
                self._sync_controls(self.session.requested)

    def _display(self, changes: dict[str, Any]) -> None:
        if not self._syncing:
            self.session.display(**changes)

    def _param_changed(self, _change: Any) -> None:
        if not self._syncing:
            values = {name: control.value for name, control in self._param_controls.items()}
            self._select(params=values)

    def _uploaded(self, change: dict[str, Any]) -> None:
        items = list(change["new"])
        if not items:
            return
        self._syncing = True
        self.upload.value = ()  # the session keeps what it needs; the widget keeps nothing
        self._syncing = False
        for item in items:
            try:
                name = self.session.add_image(str(item["name"]), bytes(item["content"]))
            except XaiError as exc:
                self._set_status(f"upload refused: {exc}", "error")
                continue
            self._syncing = True
            self.image.options = list(self.session.images)
            self._syncing = False
            self.image.value = name

    def _value_at(self, x: float, y: float) -> tuple[str, float | None]:
        """What the picture shows at a display pixel: its name and value."""
        if self._insecure:
            name = "difficulty" if self.insecurity.pairs.value == DIFFICULTY_MAP else \
                "insecurity"
            return name, self.insecurity.value_at(x, y)
        return "map value", self.session.value_at(x, y)

    def _hover(self, x: float, y: float) -> None:
        name, value = self._value_at(x, y)
        if value is not None:
            self.readout.value = f"{name} <b>{value:.4g}</b> at ({int(x)}, {int(y)})"

    def _pinned(self, x: float, y: float) -> None:
        name, value = self._value_at(x, y)
        if value is not None:
            self.readout.value = f"📌 pinned ({int(x)}, {int(y)}): {name} <b>{value:.4g}</b>"

    def _dragged(self, box: tuple[float, float, float, float], done: bool) -> None:
        """Occlude live while dragging, at most every DRAG_INTERVAL; the latest box is always
        applied in the end (a trailing update), even if the mouse-up never arrives. (The
        insecurities view does not occlude.)"""
        if self._insecure:
            self.view.set_box(None)
            self.readout.value = "<i>hiding a region works in the heat map view</i>"
            return
        if self._trailing is not None:
            self._trailing.cancel()
        wait = DRAG_INTERVAL - (time.monotonic() - self._last_drag)
        if done or wait <= 0:
            self._last_drag = time.monotonic()
            self.session.occlude(box)
            return
        self._trailing = threading.Timer(wait, self._dragged, (box, True))
        self._trailing.daemon = True
        self._trailing.start()

    def _clear_occlusion(self) -> None:
        self.view.set_box(None)
        self.session.occlude(None)

    # ------------------------------------------------------------------ session -> view

    def _event(self, event: str, payload: Any) -> None:
        # events come from the comm thread, the job worker and the drag timer: one at a time,
        # so that the widgets' state syncs never interleave
        with self._view_lock:
            self._follow(event, payload)

    def _follow(self, event: str, payload: Any) -> None:
        if event.startswith("metrics") or event == "scene":
            self.metrics.event(event, payload)
        if event == "scene":
            self._show(payload)
        elif event == "preview" and not self._insecure:
            self._draw(payload)
        elif event == "status":
            self._set_status(*payload)
        elif event == "request":
            self._sync_controls(payload)
        elif event == "progress":
            busy = payload is not None
            self.progress.layout.display = "" if busy else "none"
            self.cancel.layout.display = "" if busy else "none"
            if busy:
                self.progress.value = float(payload)
        if event in ("scene", "request") and self._insecure:
            self._follow_insecurities()

    # ------------------------------------------------------------------ the two views

    @property
    def _insecure(self) -> bool:
        return bool(self.view_mode.value == "insecurities")

    def _switch_view(self, mode: str) -> None:
        """Show the heat map or the insecurities: their controls, caption and picture."""
        with self._view_lock:
            insecure = mode == "insecurities"
            for box in self._map_only:
                box.layout.display = HIDDEN if insecure else ""
            for box in self._insecurities_only:
                box.layout.display = "" if insecure else HIDDEN
            self.view.set_box(None)
            self.insecurity.active = insecure
            self.readout.value = ("<i>hover over the picture to read the insecurity (or the "
                                  "difficulty)</i>" if insecure else
                                  "<i>hover over the picture to read the map; drag to hide a "
                                  "region from the model</i>")
            self._sync_controls(self.session.requested)  # the layer menu serves both views
            if insecure:
                if not self._follow_insecurities():
                    self.insecurity.draw()  # what it showed last, still true
            elif self.session.scene is not None:
                self._draw(self.session.scene)

    def _insecurity_source(self) -> tuple[str, str, str | None]:
        """(model, image, layer) of the insecurities: the Explorer's image and model, at its
        layer (the chosen one, or the one the map was computed at); ``None`` is the model's
        default layer (its last spatial layer), for a method that takes no layer."""
        selection = self.session.requested
        scene = self.session.scene
        layer = selection.layer
        if layer is None and scene is not None and scene.selection == selection:
            layer = scene.explanation.layer
        return selection.model, selection.image, layer

    def _follow_insecurities(self) -> bool:
        """Analyse the Explorer's image, model and layer when they changed (True), on the
        session's traces (no forward pass of its own); a class, method or display change keeps
        the analysis (False)."""
        key = self._insecurity_source()
        if key == self._insecurity_key:
            return False
        self._insecurity_key = key
        model, image, layer = key
        try:
            bundle = self.session.bundle(model)
            with model_lock(bundle.model):
                analysis = Analysis(bundle, self.session.images[image], layer,
                                    min(self.session.top_k, bundle.layers.num_classes),
                                    traces=self.session.traces(model, image))
        except Exception as exc:  # the panel's status says why; its last picture stays
            self.insecurity.fail(exc)
            return True
        self.insecurity.show(analysis)
        return True

    def _draw(self, scene: Scene) -> None:
        """The picture, its caption and, for an optimisation, its loss curve so far."""
        occlusion = scene.occlusion
        photo = scene.frame.image if occlusion is None else occlusion.image
        key = (scene.selection.model, scene.selection.image,
               None if occlusion is None else occlusion.box)
        self.view.show(photo, scene.frame.heat, key)
        self.caption.value = f"<b>{html.escape(scene.frame.caption)}</b>"
        loss = scene.explanation.extras.get("loss")
        if isinstance(loss, torch.Tensor) and loss.ndim == 2 and loss.shape[1] > 1:
            if loss is not self._loss_shown:  # a display change keeps the plot
                show_png(self.loss_plot, loss_png(loss[0]))
                self._loss_shown = loss
            self.loss_plot.layout.display = ""
        else:
            self.loss_plot.layout.display = "none"

    def _show(self, scene: Scene) -> None:
        if not self._insecure:
            self._draw(scene)
        occlusion = scene.occlusion
        explanation = scene.explanation
        target = scene.target
        self.classes.show(scene.top, target, explanation.bundle.class_name(target),
                          float(explanation.probabilities[0, target]),
                          None if occlusion is None else occlusion.probabilities)
        self._sync_controls(scene.selection)
        if bool(explanation.all_zero[0]):
            self._set_status(empty_map_message(explanation), "warning")
        elif occlusion is None:
            self._set_status("", "info")

    def _sync_controls(self, selection: Selection, layer: str | None = None) -> None:
        """Controls show ``selection`` (what is on view, or what a job computes); ``layer``
        is the layer the map was computed at, for a method that picks its own (CAM)."""
        spec = get_method(selection.method)
        bundle = self.session.bundle(selection.model)
        scene = self.session.scene
        if layer is None and scene is not None and scene.selection == selection:
            layer = scene.explanation.layer
        self._syncing = True
        try:
            self.image.options = list(self.session.images)
            self.image.value = selection.image
            self.model.value = selection.model
            self.method.value = selection.method
            self.method_help.value = (f'<div style="line-height: 1.3"><small>'
                                      f"{html.escape(spec.summary)}<br><i>"
                                      f"{html.escape(spec.paper)}</i></small></div>")
            if self._layers_of != selection.model:
                self._layers_of = selection.model
                self.classes.set_names(
                    [bundle.class_name(i) for i in range(bundle.layers.num_classes)])
            shown = selection.layer or layer
            if shown is None and self._insecure:
                shown = bundle.layers.default  # where the insecurities are computed
            self._offer_layers(shown)
            self.layer.value = shown
            self.layer.disabled = not (spec.takes_layer or self._insecure)
            if self._params_of != (spec.name, selection.model):  # layer menus follow the model
                self._param_controls = parameter_controls(spec, layers=bundle.layers)
                for control in self._param_controls.values():
                    control.observe(self._param_changed, names="value")
                self.params.children = tuple(self._param_controls.values())
                self._params_of = (spec.name, selection.model)
            for name, value in selection.params:
                self._param_controls[name].value = value
            self.display_controls.show(self.session.settings, spec.per_channel)
        finally:
            self._syncing = False

    def _offer_layers(self, keep: str | None = None) -> None:
        """The layer menu: the main layers of the model (blocks, with their shapes), or all
        candidates when "all layers" is ticked; the layer on view is always offered."""
        bundle = self.session.bundle(self.session.requested.model)
        catalog = bundle.layers
        keep = keep if keep is not None else self.layer.value
        offered = [info for info in catalog
                   if self.all_layers.value or info in catalog.main or info.name == keep]
        options = [(f"{info.name}  {'×'.join(map(str, info.shape))}"
                    f"{'  ★ default' if info.name == catalog.default else ''}", info.name)
                   for info in offered]
        if options != list(self.layer.options):
            syncing, self._syncing = self._syncing, True
            try:
                self.layer.options = options
                self.layer.value = keep if keep in {name for _, name in options} else None
            finally:
                self._syncing = syncing

    def _set_status(self, text: str, level: str) -> None:
        icon = {"error": "⚠ ", "warning": "⚠ ", "busy": "⏳ "}.get(level, "")
        self.status.value = (f'<span class="xai-status-{level}">{icon}{html.escape(text)}'
                             "</span>" if text else "")


def loss_png(loss: torch.Tensor) -> bytes:
    """The loss of an optimisation per iteration so far, ``(T,)``, as a small PNG plot."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=LOSS_SIZE, layout="constrained")
    axes = figure.subplots()
    axes.plot(range(1, len(loss) + 1), loss.float().numpy(), color="#2471a3")
    axes.set_xlabel("iteration", fontsize=8)
    axes.set_ylabel("loss", fontsize=8)
    axes.tick_params(labelsize=7)
    return figure_png(figure, LOSS_DPI)


def _models(model: Any, zoo: bool) -> dict[str, ModelBundle | None]:
    given = model if isinstance(model, (list, tuple)) else [model] if model is not None else []
    models: dict[str, ModelBundle | None] = {}
    for item in given:
        if isinstance(item, str):
            models[item] = None
            continue
        bundle = ModelBundle.wrap(item)
        name, n = bundle.name, 2
        while name in models:
            name, n = f"{bundle.name} ({n})", n + 1
        models[name] = bundle
    if not given:
        models[EMBEDDED] = load_model()
    if zoo:
        for name in ZOO:
            models.setdefault(name, None)
    return models


def _images(images: Sequence[Any] | Mapping[str, Any] | None) -> dict[str, Any]:
    named: dict[str, Any] = {}
    if isinstance(images, Mapping):
        named.update(images)
    elif images is not None:
        for index, item in enumerate(images):
            name = str(item).rsplit("/", 1)[-1] if isinstance(item, str) else \
                getattr(item, "filename", "") or f"image {index + 1}"
            if isinstance(item, torch.Tensor) and item.is_floating_point():
                name = f"tensor {index + 1}"
            named[name.rsplit("/", 1)[-1]] = item
    named.update({k: v for k, v in sample_images().items() if k not in named})
    return named
