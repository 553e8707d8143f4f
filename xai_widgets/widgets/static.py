"""The static copy of an app's picture, for notebooks viewed without a kernel.

An app (the Explorer, Insecurities) displays its live widget and after it a
:class:`StaticCopy`: plain HTML with the picture on view (a PNG of the canvas's composite) and
its caption, kept up to date through its display id whenever a frame stays on view for a
moment. The live app's stylesheet (:data:`CSS`) hides the copy; a notebook rendered without
a kernel or without widget support (nbconvert, GitHub, nbviewer) shows it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from typing import Any

from .canvas import CanvasView, png

#: the rules a live app adds to its stylesheet: its static copy stays out of view
CSS = """.xai-static { display: none; }
.jp-OutputArea-child:has(.xai-static), .output_area:has(.xai-static) { display: none; }"""


class StaticCopy:
    """The picture of ``view`` and the text of ``caption()`` as self-contained HTML."""

    def __init__(self, view: CanvasView, caption: Callable[[], str], width: int) -> None:
        self.view = view
        self.caption = caption
        self.width = width
        self._handle: Any = None

    def html(self) -> str:
        picture = self.view.composite()
        if picture is None:
            return '<div class="xai-static"></div>'
        data = base64.b64encode(png(picture, level=6)).decode()
        caption = html.escape(self.caption())
        return (f'<div class="xai-static"><img src="data:image/png;base64,{data}" '
                f'alt="{caption}" width="{self.width}"/><p>{caption}</p></div>')

    def display(self, widget: Any) -> None:
        """Show the live ``widget``, then the copy (refreshed when a frame stays on view)."""
        from IPython.display import HTML, display

        display(widget)
        self._handle = display(HTML(self.html()), display_id=True)
        self.view.on_still = self.refresh

    def refresh(self) -> None:
        if self._handle is not None:
            from IPython.display import HTML

            self._handle.update(HTML(self.html()))
