"""A row of pictures with titles, as a PNG that any notebook front end shows.

The course draws its figures with matplotlib's object API and hands back PNG bytes, so a
picture appears in a fresh kernel whatever the matplotlib backend (a bare ``Figure`` object
shows as ``<Figure size ...>`` text when pyplot's inline backend was never loaded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class Picture:
    """PNG bytes that show themselves in a notebook (``_repr_png_``)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _repr_png_(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return f"<PNG picture, {len(self.data) // 1024} KiB>"


def as_picture(figure: Any, dpi: int = 80) -> Picture:
    """A matplotlib figure as a :class:`Picture`."""
    from ..figures import figure_png

    return Picture(figure_png(figure, dpi=dpi))


def _array(item: Any) -> np.ndarray:
    if hasattr(item, "composite"):  # a Frame
        return item.composite()
    if hasattr(item, "detach"):
        item = item.detach().cpu().float().numpy()
    array = np.asarray(item)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)  # (C, H, W) -> (H, W, C)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def show(pictures: Sequence[Any], titles: Sequence[str] | None = None, size: float = 2.6,
         cmap: str = "inferno", dpi: int = 80, columns: int | None = None) -> Picture:
    """Pictures side by side: Frames, RGB arrays ``(H, W, 3)`` (uint8 or floats in [0, 1]),
    maps ``(H, W)`` (drawn with ``cmap``) or tensors ``(C, H, W)``; one title each."""
    from matplotlib.figure import Figure

    items = [_array(p) for p in pictures]
    titles = list(titles) if titles is not None else [""] * len(items)
    if len(titles) != len(items):
        raise ValueError(f"{len(items)} pictures but {len(titles)} titles")
    columns = columns or len(items)
    rows = -(-len(items) // columns)
    figure = Figure(figsize=(size * columns, (size + 0.35) * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, item, title in zip(axes, items, titles, strict=False):
        if item.ndim == 2:
            axis.imshow(item, cmap=cmap)
        else:
            axis.imshow(np.clip(item, 0, 255 if item.dtype == np.uint8 else 1))
        axis.set_title(title, fontsize=8)
    for axis in axes:
        axis.set_axis_off()
    return as_picture(figure, dpi)


def plot(draw: Any, size: tuple[float, float] = (4.5, 3.0), dpi: int = 80) -> Picture:
    """A one-axes figure drawn by ``draw(axes)``, as a :class:`Picture`."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    draw(figure.subplots())
    return as_picture(figure, dpi)
