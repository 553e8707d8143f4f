"""``Insecurities``: where, and between which classes, the network hesitates on one image
(deliberative explanations, Wang & Vasconcelos, "Deliberative Explanations: visualizing
network insecurities", NeurIPS 2019), as an app of its own.

The app is a host of :class:`~xai_widgets.widgets.insecurity_panel.InsecurityPanel` (the
controls, the picture and the integrated-gradients job; the Explorer's insecurities view is
the other host): it builds the :class:`~xai_widgets.deliberative.Analysis` of the image (one
forward pass, kept), gives the panel a canvas, and keeps a static copy of the picture for
notebooks viewed without a kernel.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import numpy as np
from torch import nn

from ..deliberative import Analysis, InsecurityResult
from ..models import ModelBundle
from . import insecurity_panel, static
from .canvas import CanvasView
from .insecurity_panel import InsecurityPanel

CSS = f"""<style>
.xai-status-error {{ color: #b00020; }}
.xai-status-busy {{ color: #555; font-style: italic; }}
{insecurity_panel.CSS}
{static.CSS}
</style>"""


class Insecurities:
    """The insecurities of one image, explored: ``Insecurities(bundle, image)``.

    ``predictor``: a hardness predictor (adds the ``hp`` difficulty). ``ig_steps``: points of
    the integrated-gradients path, computed as a cancellable job (``threaded=False``: in the
    calling thread). The picture shown is :attr:`picture` (uint8 ``(H, W, 3)``), the result
    behind it :attr:`result`; the controls are the :attr:`panel`'s.
    """

    def __init__(self, model: ModelBundle | nn.Module, image: Any, difficulty: str = "entropy",
                 attribution: str = "gradient", top_classes: int = 5,
                 layer: str | None = None, predictor: nn.Module | None = None,
                 area: float = 0.1, ig_steps: int = 32, width: int = 448,
                 threaded: bool = True) -> None:
        self.view = CanvasView(width)
        self.panel = InsecurityPanel(self.view, difficulty=difficulty, attribution=attribution,
                                     predictor=predictor, area=area, ig_steps=ig_steps,
                                     threaded=threaded)
        self.analysis = Analysis(model, image, layer, top_classes)
        self.static = static.StaticCopy(self.view, lambda: self.panel.caption_text, width)
        self.widget = widgets.HBox([widgets.HTML(CSS), self.panel.controls,
                                    widgets.VBox([self.view.widget, self.panel.caption])])
        self.widget.add_class("xai-insecurities")
        self.panel.show(self.analysis)

    @property
    def result(self) -> InsecurityResult | None:
        return self.panel.result

    @property
    def picture(self) -> np.ndarray | None:
        return self.panel.picture

    def wait(self, timeout: float | None = None) -> bool:
        """Block until integrated gradients are done (True), or ``timeout`` seconds passed."""
        return self.panel.wait(timeout)

    def _ipython_display_(self) -> None:
        """The live app, and after it a static copy of its picture."""
        self.static.display(self.widget)

    def static_html(self) -> str:
        return self.static.html()
