"""Matplotlib figures as PNG: an object with ``figure()`` shows itself in a notebook."""

from __future__ import annotations

import io
from typing import Any


def figure_png(figure: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class ShowsFigure:
    """Mixin: ``_repr_png_`` draws ``self.figure()``, so a result is a plot in Jupyter."""

    def figure(self) -> Any:
        raise NotImplementedError

    def _repr_png_(self) -> bytes:
        return figure_png(self.figure())
