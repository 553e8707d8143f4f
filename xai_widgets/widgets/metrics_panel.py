"""The Explorer's metrics panel: is the shown map faithful to the model?

* **deletion / insertion** (a toggle): the curves of the shown map (Petsiuk et al., RISE,
  BMVC 2018) with their areas, measured again whenever the map changes, as a cancellable job;
  the number of steps per curve trades precision for speed (``2·steps + 1`` forward passes).
* **sanity check** (a button): cascading model randomisation (Adebayo et al., NeurIPS 2018)
  of the shown map; its similarity to the original should drop towards 0.

The panel only turns clicks into :meth:`Session.measure` / :meth:`Session.sanity` calls and
``"metrics"`` events into plots; the work and the caches are the session's.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from ..figures import figure_png
from ..metrics import DeletionInsertion, Sanity, get_metric
from ..session import Measured, Scene, Selection, Session

CURVE_DPI = 100  # 420 × 320 pixels
SANITY_DPI = 60  # 450 × 300 pixels
_HIDDEN = "none"


class MetricsPanel:
    """Deletion/insertion curves and the sanity check of a session's shown map."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.curves = widgets.ToggleButton(
            description="deletion / insertion", icon="line-chart", value=session.measuring,
            tooltip="measure the shown map: deletion and insertion curves and their areas",
            layout=widgets.Layout(width="175px"))
        self.steps = widgets.Dropdown(
            options=[(f"{s} steps{' (RISE)' if s == 224 else ''}", s)
                     for s in session.CURVE_STEPS],
            value=session.curve_steps, layout=widgets.Layout(width="125px"),
            tooltip="steps per curve: more is finer and slower (2·steps + 1 forward passes)")
        self.sanity = widgets.Button(
            description="sanity check", icon="random", layout=widgets.Layout(width="130px"),
            tooltip="randomise the model's layers from the top and explain again")
        self.progress = widgets.FloatProgress(min=0, max=1, layout=widgets.Layout(
            width="300px", display=_HIDDEN))
        self.curve_plot = widgets.Image(format="png", layout=widgets.Layout(display=_HIDDEN))
        self.curve_text = widgets.HTML(layout=widgets.Layout(width="440px"))
        self.sanity_plot = widgets.Image(format="png", layout=widgets.Layout(display=_HIDDEN))
        self.sanity_text = widgets.HTML(layout=widgets.Layout(width="440px"))
        self.curves.observe(lambda c: session.measure(c["new"], self.steps.value), names="value")
        self.steps.observe(self._steps_changed, names="value")
        self.sanity.on_click(lambda _b: session.sanity())
        self.widget = widgets.VBox([
            widgets.HBox([self.curves, self.steps, self.sanity]), self.progress,
            self.curve_plot, self.curve_text, self.sanity_plot, self.sanity_text])
        self.widget.add_class("xai-metrics")
        self._shown: dict[str, Selection] = {}

    def event(self, event: str, payload: Any) -> None:
        """Follow the session: ``scene``, ``metrics`` and ``metrics-progress`` events."""
        if event == "metrics":
            self._show(payload)
        elif event == "metrics-progress":
            _kind, fraction = payload
            self.progress.layout.display = _HIDDEN if fraction is None else ""
            if fraction is not None:
                self.progress.value = float(fraction)
        elif event == "scene":
            self._new_scene(payload)

    def _steps_changed(self, change: dict[str, Any]) -> None:
        if self.curves.value:
            self.session.measure(True, change["new"])
        else:
            self.session.curve_steps = change["new"]

    def _new_scene(self, scene: Scene) -> None:
        """A map the results on view do not belong to: say so, until new ones arrive."""
        if self._shown.get("sanity") not in (None, scene.selection):
            self.sanity_plot.layout.display = _HIDDEN
            self.sanity_text.value = ""
            del self._shown["sanity"]
        if not self.curves.value:
            self.curve_plot.layout.display = _HIDDEN
            self.curve_text.value = ""
            self._shown.pop("curves", None)
        elif self._shown.get("curves") != scene.selection:
            self.curve_text.value = "<i>measuring the new map…</i>"

    def _show(self, measured: Measured) -> None:
        scene = self.session.scene
        if scene is None or measured.selection != scene.selection:
            return  # a result for a map no longer on view
        self._shown[measured.kind] = measured.selection
        result = measured.result
        if isinstance(result, DeletionInsertion):
            if not self.curves.value:
                return
            show_png(self.curve_plot, figure_png(result.figure(), CURVE_DPI))
            self.curve_text.value = curve_summary(result)
        elif isinstance(result, Sanity):
            show_png(self.sanity_plot, figure_png(result.figure(), SANITY_DPI))
            self.sanity_text.value = sanity_summary(result)


def curve_summary(result: DeletionInsertion) -> str:
    """A few lines of HTML: the two areas, what they mean, and how they were measured."""
    areas = {kind: values[0] for kind, values in result.areas().items()}
    deletion, insertion = (get_metric(kind).headline for kind in ("deletion", "insertion"))
    steps = result.deletion.scores.shape[1] - 1
    protocol = ("RISE's protocol (224 steps at 224 × 224)" if steps == 224 else
                f"{steps} steps per curve, not RISE's 224 (choose \"224 steps (RISE)\" to "
                "compare with published areas)")
    return (f"<small>deletion area <b>{areas['deletion']:.3f}</b> {deletion.arrow} "
            f"({deletion.better}: deleting the top pixels first destroys the class) · "
            f"insertion area <b>{areas['insertion']:.3f}</b> {insertion.arrow} "
            f"({insertion.better})<br>{protocol}: "
            f"{result.pixels_per_step} pixels per step, {result.forwards} forward passes; "
            f"deletion to {result.deletion.substrate}, insertion from "
            f"{result.insertion.substrate}</small>")


def sanity_summary(result: Sanity) -> str:
    """One line of HTML: the similarities once every stage is random, and how to read them."""
    final = {name: values[0] for name, values in result.final().items()}
    numbers = ", ".join(f"{name} <b>{value:.2f}</b>" for name, value in final.items())
    return (f"<small>similarity to the original map after randomising {len(result.stages)} "
            f"stages from the top: {numbers}. 1 is unchanged; a map that depends on what the "
            f"model learnt drops towards 0.</small>")


def show_png(image: widgets.Image, data: bytes) -> None:
    """Show a PNG at its own size (an Image widget would stretch it to the column)."""
    width = int.from_bytes(data[16:20], "big")  # the IHDR chunk: width, then height
    image.value = data
    image.layout.width = f"{width}px"
    image.layout.display = ""
