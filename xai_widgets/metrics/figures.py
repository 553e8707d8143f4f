"""Pictures of metric results in notebooks: a result that has ``figure()`` shows itself."""

from __future__ import annotations

import io
from typing import Any


class ShowsFigure:
    """Mixin: ``_repr_png_`` draws ``self.figure()``, so a result is a plot in Jupyter."""

    def figure(self) -> Any:
        raise NotImplementedError

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.figure().savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()
