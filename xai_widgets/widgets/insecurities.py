"""``Insecurities``: where, and between which classes, the network hesitates on one image
(deliberative explanations, Wang & Vasconcelos, "Deliberative Explanations: visualizing
network insecurities", NeurIPS 2019).

Controls: the difficulty score (cs / entropy / hp when a predictor is given), the attribution
(gradient, integrated gradients, gradient–Hessian), normalisation of the maps, the list of
ambiguous pairs with their scores (picking one shows its insecurity; the first entry is the
difficulty map), the area fraction of the segment and the display (ours / the original's).

All the state lives in a :class:`~xai_widgets.deliberative.Analysis`: one forward pass for the
image, the class maps per attribution and the difficulty maps per score, each computed once,
so a pair, an area or a display change runs no pass, and a difficulty switch only the
difficulty's backward. Integrated gradients run in the notebook's thread with a progress bar.
"""

from __future__ import annotations

import base64
import html
from typing import Any

import ipywidgets as widgets
import numpy as np
from torch import nn

from ..deliberative import Analysis, InsecurityResult
from ..deliberative.maps import ATTRIBUTIONS
from ..deliberative.result import STYLES
from ..errors import ParameterError, XaiError
from ..models import ModelBundle
from .canvas import CanvasView, png

DIFFICULTY_MAP = -1  # the entry of the pair list that shows the difficulty map
LABELS = {"gradient": "activation × gradient", "integrated_gradients": "integrated gradients",
          "gradient_hessian": "gradient–Hessian (difficulty)"}

CSS = """<style>
.xai-status-error { color: #b00020; }
.xai-static { display: none; }
.jp-OutputArea-child:has(.xai-static), .output_area:has(.xai-static) { display: none; }
</style>"""


class Insecurities:
    """The insecurities of one image, explored: ``Insecurities(bundle, image)``.

    ``predictor``: a hardness predictor (adds the ``hp`` difficulty). ``ig_steps``: points of
    the integrated-gradients path. The picture shown is :attr:`picture` (uint8 ``(H, W, 3)``),
    the result behind it :attr:`result`.
    """

    def __init__(self, model: ModelBundle | nn.Module, image: Any, difficulty: str = "entropy",
                 attribution: str = "gradient", top_classes: int = 5,
                 layer: str | None = None, predictor: nn.Module | None = None,
                 area: float = 0.1, ig_steps: int = 32, width: int = 448) -> None:
        self.analysis = Analysis(model, image, layer, top_classes)
        self.predictor = predictor
        self.ig_steps = ig_steps
        self.width = width
        options = ["entropy", "cs"] + (["hp"] if predictor is not None else [])
        if difficulty not in options or attribution not in ATTRIBUTIONS:
            raise ParameterError(
                f"difficulty must be one of {', '.join(map(repr, options))} ('hp' needs "
                f"predictor=...) and attribution one of {', '.join(map(repr, ATTRIBUTIONS))}; "
                f"got {difficulty!r}, {attribution!r}")
        self.difficulty = widgets.ToggleButtons(options=options, value=difficulty,
                                                description="difficulty",
                                                tooltips=["normalised entropy",
                                                          "1 − max probability",
                                                          "hardness predictor"][:len(options)])
        self.attribution = widgets.Dropdown(options=[(LABELS[a], a) for a in ATTRIBUTIONS],
                                            value=attribution, description="attribution")
        self.normalise = widgets.Checkbox(value=True, description="normalise each map",
                                          indent=False)
        self.pairs = widgets.Select(options=[], rows=8, description="pairs",
                                    layout=widgets.Layout(width="360px"))
        self.area = widgets.FloatSlider(value=area, min=0.01, max=1.0, step=0.01,
                                        description="area", readout_format=".0%")
        self.style = widgets.ToggleButtons(options=list(STYLES), value="ours",
                                           description="display")
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0,
                                              layout=widgets.Layout(visibility="hidden"))
        self.status = widgets.HTML()
        self.caption = widgets.HTML()
        self.view = CanvasView(width)
        self.result: InsecurityResult | None = None
        self.picture: np.ndarray | None = None
        self._static: Any = None
        self._busy = False
        self._frames = 0
        self._caption = ""
        controls = widgets.VBox([self.difficulty, self.attribution, self.normalise, self.pairs,
                                 self.area, self.style, self.progress, self.status])
        self.widget = widgets.HBox([widgets.HTML(CSS), controls,
                                    widgets.VBox([self.view.widget, self.caption])])
        self.widget.add_class("xai-insecurities")
        for control in (self.difficulty, self.attribution, self.normalise):
            control.observe(self._recompute, names="value")
        for control in (self.pairs, self.area, self.style):
            control.observe(self._redraw, names="value")
        self._recompute()

    # ------------------------------------------------------------------ compute and draw

    def _report(self, fraction: float, **_series: Any) -> None:
        self.progress.value = fraction

    def _recompute(self, _change: Any = None) -> None:
        if self._busy:
            return
        iterative = self.attribution.value == "integrated_gradients"
        self.progress.layout.visibility = "visible" if iterative else "hidden"
        self.progress.value = 0.0
        try:
            result = self.analysis.result(
                0, self.difficulty.value, self.attribution.value, self.normalise.value,
                predictor=self.predictor if self.difficulty.value == "hp" else None,
                ig_steps=self.ig_steps, progress=self._report if iterative else None)
        except XaiError as exc:  # keep the last good picture, say what went wrong
            self.status.value = f'<span class="xai-status-error">{html.escape(str(exc))}</span>'
            return
        finally:
            self.progress.layout.visibility = "hidden"
        self.result = result
        previous = self.pairs.value
        options = [(f"difficulty map · {result.difficulty.kind} {result.difficulty.score:.3f}",
                    DIFFICULTY_MAP)]
        options += [(f"{p.label} · {p.score:.3g}", rank) for rank, p in enumerate(result.pairs)]
        self._busy = True
        try:
            self.pairs.options = options
            keep = previous if previous is not None and previous < len(result.pairs) else None
            self.pairs.value = keep if keep is not None else (0 if result.pairs else
                                                              DIFFICULTY_MAP)
        finally:
            self._busy = False
        top = ", ".join(f"{name} {p:.0%}" for _, name, p in result.classes[:3])
        self.status.value = (f"{html.escape(top)}<br>{html.escape(result.difficulty.label)}: "
                             f"{result.difficulty.score:.3f} · {len(result.pairs)} pairs · "
                             f"layer {html.escape(result.layer)}")
        self._redraw()

    def _redraw(self, _change: Any = None) -> None:
        if self._busy or self.result is None:
            return
        result = self.result
        rank = self.pairs.value
        if rank is None or rank == DIFFICULTY_MAP or not result.pairs:
            self.picture = result.difficulty_picture()
            caption = (f"difficulty map: {result.difficulty.label} "
                       f"{result.difficulty.score:.3f} ({LABELS[result.attribution]})")
        else:
            pair = result.pairs[rank]
            self.picture = result.picture(pair, self.area.value, self.style.value)
            caption = (f"insecurity {pair.label} · score {pair.score:.3g} · top "
                       f"{self.area.value:.0%} ({LABELS[result.attribution]}, "
                       f"{result.difficulty.kind})")
        transparent = np.zeros((*self.picture.shape[:2], 4), dtype=np.uint8)
        self._frames += 1  # every picture is a new photo layer (the overlay is baked in)
        self.view.show(self.picture, transparent, photo_key=self._frames)
        self._caption = caption
        self.caption.value = f"<b>{html.escape(caption)}</b>"
        self._refresh_static()

    # ------------------------------------------------------------------ notebook

    def _ipython_display_(self) -> None:
        """The live app, and after it a static copy of its picture (for notebooks viewed
        without a kernel)."""
        from IPython.display import HTML, display

        display(self.widget)
        self._static = display(HTML(self.static_html()), display_id=True)

    def static_html(self) -> str:
        if self.picture is None:
            return '<div class="xai-static"></div>'
        data = base64.b64encode(png(self.picture, level=6)).decode()
        caption = html.escape(self._caption)
        return (f'<div class="xai-static"><img src="data:image/png;base64,{data}" '
                f'width="{self.width}"/><p>{caption}</p></div>')

    def _refresh_static(self) -> None:
        if self._static is not None:
            from IPython.display import HTML

            self._static.update(HTML(self.static_html()))
