"""Matplotlib figures as PNG: an object with ``figure()`` shows itself in a notebook."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from .errors import ParameterError

#: what matplotlib writes without extra packages
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def writable_path(path: str | os.PathLike[str], suffixes: tuple[str, ...] = FIGURE_SUFFIXES,
                  what: str = "picture") -> Path:
    """``path`` checked before any work is done: a file name (not a folder) with one of
    ``suffixes``, in an existing folder this process may write to."""
    target = Path(path)
    if target.is_dir():
        raise ParameterError(f"{str(target)!r} is a folder; give a file name for the {what}, "
                             f"e.g. {str(target / ('out' + suffixes[0]))!r}")
    if target.suffix.lower() not in suffixes:
        raise ParameterError(f"cannot write a {what} as {target.name!r}: the name must end in "
                             f"{', '.join(suffixes)}")
    folder = target.parent
    if not folder.is_dir():
        raise ParameterError(f"the folder {str(folder)!r} does not exist; create it first "
                             f"(mkdir -p {str(folder)!r}) or write the {what} elsewhere")
    if not os.access(folder, os.W_OK):
        raise ParameterError(f"cannot write into {str(folder)!r} (permission denied); choose "
                             "another folder")
    return target


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
