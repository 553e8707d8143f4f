"""Reading the Explorer's canvas back from a browser page."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

CANVAS = ".xai-explorer .xai-picture canvas"


def canvas_pixels(page) -> np.ndarray:
    """The Explorer's canvas as the page shows it, RGB ``(H, W, 3)`` int16."""
    url = page.evaluate(f"() => document.querySelector('{CANVAS}').toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)
