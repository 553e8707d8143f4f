"""The picture: an ipycanvas MultiCanvas with a photo layer, a heat layer and an interaction
layer.

* Layers are sent as lossless RGBA PNG (ipycanvas would encode RGB as JPEG), and the photo is
  sent only when it changes: a new opacity or colormap re-sends the heat layer alone.
* ipycanvas keeps no pixels, so the last frame is replayed whenever a client connects (a page
  reload, a second view of the same widget).
* ``on_still`` is called when a frame has stayed on view for a moment (the Explorer then
  refreshes the static copy of the picture that a saved notebook keeps).
* Mouse events are forwarded as ``on_drag(box, done)``, ``on_hover(x, y)``, ``on_click(x, y)``
  in canvas pixels.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Hashable

import ipywidgets as widgets
import numpy as np
from ipycanvas import MultiCanvas, hold_canvas
from ipycanvas.canvas import COMMANDS, Canvas
from PIL import Image

PHOTO, HEAT, INTERACTION = 0, 1, 2
STILL_DELAY = 0.5  # seconds a frame stays on view before ``on_still`` is called


def png(rgba: np.ndarray, level: int = 1) -> bytes:
    """Lossless PNG of an RGB or RGBA uint8 array (zlib ``level`` 1: fast, a little larger)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba)).save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def put_rgba(canvas: Canvas, rgba: np.ndarray) -> None:
    """``canvas.put_image_data(rgba)`` with a faster PNG: ipycanvas encodes at zlib level 6,
    which costs more than the rest of a display change; level 1 keeps it lossless."""
    try:
        canvas._canvas_manager.send_draw_command(canvas, COMMANDS["putImageData"], [0, 0],
                                                 [png(rgba)])
    except (AttributeError, KeyError):  # another ipycanvas: its public path, slower
        canvas.put_image_data(rgba, 0, 0)


def opaque(rgb: np.ndarray) -> np.ndarray:
    return np.dstack([rgb, np.full(rgb.shape[:2], 255, dtype=np.uint8)])


class CanvasView:
    """The image area of the Explorer; ``widget`` is what goes in a layout."""

    def __init__(self, width: int = 448) -> None:
        self.canvas = MultiCanvas(3, width=224, height=224)
        self.canvas.layout = widgets.Layout(width=f"{width}px", height="auto")
        self.widget = widgets.Box([self.canvas], layout=widgets.Layout(width=f"{width}px"))
        self.widget.add_class("xai-picture")
        self.on_still: Callable[[], None] | None = None
        self.on_drag: Callable[[tuple[float, float, float, float], bool], None] | None = None
        self.on_hover: Callable[[float, float], None] | None = None
        self.on_click: Callable[[float, float], None] | None = None
        self._photo: np.ndarray | None = None
        self._photo_key: Hashable = None
        self._heat: np.ndarray | None = None
        self._marks: list[tuple[float, float]] = []
        self._box: tuple[float, float, float, float] | None = None
        self._press: tuple[float, float] | None = None
        self._timer: threading.Timer | None = None
        self.frames_sent = 0
        self.canvas.on_client_ready(self.replay)
        self.canvas.on_mouse_down(self._down)
        self.canvas.on_mouse_move(self._move)
        self.canvas.on_mouse_up(self._up)
        self.canvas.on_mouse_out(self._out)

    # ------------------------------------------------------------------ drawing

    def show(self, photo: np.ndarray, heat: np.ndarray, photo_key: Hashable) -> None:
        """Show a frame: ``photo`` uint8 (H, W, 3), ``heat`` uint8 (H, W, 4). The photo layer
        is re-sent only when ``photo_key`` changes."""
        height, width = photo.shape[:2]
        resized = (self.canvas.width, self.canvas.height) != (width, height)
        if resized:
            self.canvas.width, self.canvas.height = width, height
        with hold_canvas():  # one message: no half-drawn frame
            if resized or photo_key != self._photo_key:
                self._photo, self._photo_key = opaque(photo), photo_key
                put_rgba(self.canvas[PHOTO], self._photo)
            self._heat = heat
            self.canvas[HEAT].clear()
            put_rgba(self.canvas[HEAT], heat)
        self.frames_sent += 1
        self._schedule_still()

    def replay(self) -> None:
        """Draw the last frame again (a client connected with empty canvases)."""
        if self._photo is not None and self._heat is not None:
            with hold_canvas():
                put_rgba(self.canvas[PHOTO], self._photo)
                put_rgba(self.canvas[HEAT], self._heat)
                self._draw_interaction()

    def composite(self) -> np.ndarray | None:
        """The photo with the heat layer blended over it, uint8 (H, W, 3)."""
        if self._photo is None or self._heat is None:
            return None
        alpha = self._heat[..., 3:4].astype(np.float32) / 255.0
        blended = self._heat[..., :3] * alpha + self._photo[..., :3] * (1.0 - alpha)
        return np.round(blended).astype(np.uint8)

    def _schedule_still(self) -> None:
        if self.on_still is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(STILL_DELAY, self.on_still)
        self._timer.daemon = True
        self._timer.start()

    def pin(self, x: float, y: float) -> None:
        self._marks = [(x, y)]
        self._draw_interaction()

    def set_box(self, box: tuple[float, float, float, float] | None) -> None:
        self._box = box
        self._draw_interaction()

    def _draw_interaction(self) -> None:
        layer = self.canvas[INTERACTION]
        layer.clear()
        if self._box is not None:
            left, top, right, bottom = self._box
            layer.stroke_style, layer.line_width = "#00e5ff", 2
            layer.set_line_dash([6, 4])
            layer.stroke_rect(left, top, right - left, bottom - top)
            layer.set_line_dash([])
        for x, y in self._marks:
            layer.stroke_style, layer.line_width = "white", 2
            layer.stroke_circle(x, y, 6)
            layer.fill_style = "black"
            layer.fill_circle(x, y, 2)

    # ------------------------------------------------------------------ mouse

    def _down(self, x: float, y: float) -> None:
        self._press = (x, y)

    def _move(self, x: float, y: float) -> None:
        if self._press is None:
            if self.on_hover is not None:
                self.on_hover(x, y)
            return
        box = (*self._press, x, y)
        if abs(x - self._press[0]) + abs(y - self._press[1]) >= 4:
            self.set_box(_ordered(box))
            if self.on_drag is not None:
                self.on_drag(_ordered(box), False)

    def _up(self, x: float, y: float) -> None:
        press, self._press = self._press, None
        if press is None:
            return
        if abs(x - press[0]) + abs(y - press[1]) < 4:
            self.pin(x, y)
            if self.on_click is not None:
                self.on_click(x, y)
            return
        box = _ordered((*press, x, y))
        self.set_box(box)
        if self.on_drag is not None:
            self.on_drag(box, True)

    def _out(self, x: float, y: float) -> None:
        if self._press is not None:
            self._up(x, y)


def _ordered(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    left, right = sorted((box[0], box[2]))
    top, bottom = sorted((box[1], box[3]))
    return (left, top, right, bottom)
