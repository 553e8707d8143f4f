"""Localisation: the pointing game and the energy-based pointing game.

Pointing game (Zhang, Bargal, Lin, Brandt, Shen, Sclaroff. "Top-down Neural Attention by
Excitation Backprop." ECCV 2016 / IJCV 2018. arXiv:1608.00507): a hit when the map's maximum
point, at the input's resolution, lies on the object or within ``tolerance`` pixels of it
(the paper uses 15 pixels).

Energy-based pointing game (Wang, Wang, Du, Yang, Zhang, Ding, Mardziel, Hu. "Score-CAM:
Score-Weighted Visual Explanations for Convolutional Neural Networks." CVPR-W 2020.
arXiv:1910.01279): the share of the map's energy, ``Σ_{p∈object} m(p) / Σ_p m(p)``, with
``m`` the map as displayed (a ReLU'd CAM, ``|g|`` for gradients; never negative).

The object is a mask ``(N, H, W)`` or boxes in input pixels. A box is ``(x0, y0, x1, y1)``
in continuous coordinates (pixel ``(i, j)`` covers ``[j, j+1] × [i, i+1]``): a pixel belongs
to it when its centre does. Boxes of the original photo map to input pixels with
:func:`box_to_input`. An empty object, or a map with no energy, gives NaN (undefined),
never a silent 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..errors import ParameterError
from ..explanation import Explanation
from ..images import Preprocessing
from ..render import Channels, Polarity, RenderSettings
from .subject import MetricError, check_maps, pixel_values

Box = Sequence[float]


@dataclass(frozen=True)
class Pointing:
    """``hits``: ``(N,)`` float, 1 hit / 0 miss / NaN (no object); ``points``: ``(N, 2)`` the
    maximum point ``(row, column)`` in input pixels; ``distances``: ``(N,)`` pixels from the
    maximum point to the object (0 inside)."""

    hits: torch.Tensor
    points: torch.Tensor
    distances: torch.Tensor
    tolerance: float


def pointing_game(maps: Explanation | torch.Tensor | np.ndarray, *, boxes: Any = None,
                  masks: Any = None, size: tuple[int, int] | None = None,
                  tolerance: float = 15.0, channels: Channels | None = None,
                  polarity: Polarity | None = None) -> Pointing:
    """Does each map's maximum point fall on the object (within ``tolerance`` pixels)?

    ``maps``: an Explanation or raw maps ``(N, h, w)``/``(N, C, h, w)``. ``boxes``: one box
    for every image, or per image a box or a list of boxes (their union), in input pixels;
    ``masks``: bool ``(N, H, W)`` or ``(H, W)``. ``size``: the input's ``(H, W)`` when boxes
    are given with bare maps (an Explanation uses its model's crop size).
    """
    values, region = _values_and_region(maps, boxes, masks, size, channels, polarity, None)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or \
            not 0 <= tolerance < float("inf"):
        raise ParameterError(f"tolerance is a number of pixels >= 0, got {tolerance!r}")
    flat = values.flatten(1).argmax(dim=1)
    width = values.shape[-1]
    points = torch.stack([flat // width, flat % width], dim=1)
    distances = torch.tensor([
        _distance(region[i].numpy(), int(points[i, 0]), int(points[i, 1]))
        for i in range(len(values))], dtype=torch.float32)
    hits = (distances <= tolerance).float()
    hits[torch.isnan(distances)] = float("nan")
    return Pointing(hits, points, distances, float(tolerance))


def energy_pointing_game(maps: Explanation | torch.Tensor | np.ndarray, *, boxes: Any = None,
                         masks: Any = None, size: tuple[int, int] | None = None,
                         channels: Channels | None = None,
                         polarity: Polarity | None = None) -> torch.Tensor:
    """Share of each map's energy on the object, ``(N,)`` in [0, 1] (NaN: no object, or a
    map with no positive energy). Arguments as :func:`pointing_game`."""
    values, region = _values_and_region(maps, boxes, masks, size, channels, polarity,
                                         "nonnegative")
    total = values.sum(dim=(1, 2))
    inside = (values * region).sum(dim=(1, 2))
    share = inside / total.clamp(min=1e-30)
    undefined = (total <= 0) | ~region.flatten(1).any(dim=1)
    return torch.where(undefined, torch.full_like(share, float("nan")), share)


def boxes_to_masks(boxes: Any, size: tuple[int, int], count: int) -> torch.Tensor:
    """Boxes (one for all, or per image a box or a list of boxes) -> bool ``(count, H, W)``."""
    height, width = size
    per_image = _per_image(boxes, count)
    rows = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    cols = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    masks = torch.zeros(count, height, width, dtype=torch.bool)
    for i, image_boxes in enumerate(per_image):
        for box in image_boxes:
            x0, y0, x1, y1 = box
            masks[i] |= (cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1)
    return masks


def box_to_input(box: Box, image_size: tuple[int, int], preprocessing: Preprocessing
                 ) -> tuple[float, float, float, float]:
    """A box ``(x0, y0, x1, y1)`` in pixels of the original photo (``image_size`` = its
    ``(width, height)``) -> the same box in pixels of the model input (resize + crop)."""
    left, top, right, bottom = preprocessing.crop_box(*image_size)
    crop_h, crop_w = preprocessing.crop
    sx, sy = crop_w / (right - left), crop_h / (bottom - top)
    x0, y0, x1, y1 = (float(v) for v in box)
    return ((x0 - left) * sx, (y0 - top) * sy, (x1 - left) * sx, (y1 - top) * sy)


# --------------------------------------------------------------------------- helpers


def _values_and_region(maps: Any, boxes: Any, masks: Any, size: tuple[int, int] | None,
                       channels: Channels | None, polarity: Polarity | None,
                       sign: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The map at the input size ``(N, H, W)`` and the object ``(N, H, W)`` bool."""
    display = maps.method.display if isinstance(maps, Explanation) else RenderSettings()
    if size is None and isinstance(maps, Explanation):
        size = maps.bundle.preprocessing.crop
    raw = maps.map if isinstance(maps, Explanation) else maps
    if (boxes is None) == (masks is None):
        raise MetricError("give the object either as boxes= or as masks=")
    count = len(raw)
    if masks is not None:
        region = _check_masks(masks, count)
        size = (int(region.shape[-2]), int(region.shape[-1]))
    elif size is None:
        raise MetricError("boxes are in input pixels: give size=(H, W) of the model input")
    else:
        region = boxes_to_masks(boxes, size, count)
    raw = check_maps(raw, count, size)
    if channels is not None or polarity is not None:
        display = display.updated(**{k: v for k, v in (("channels", channels),
                                                       ("polarity", polarity)) if v})
    if sign == "nonnegative" and display.polarity == "signed":
        display = display.updated(polarity="positive")
    return pixel_values(raw, size, display), region


def _check_masks(masks: Any, count: int) -> torch.Tensor:
    region = torch.as_tensor(np.asarray(masks))
    if region.ndim == 2:
        region = region.expand(count, -1, -1)
    if region.ndim != 3 or len(region) != count:
        raise MetricError(f"masks have shape {tuple(region.shape)}; expected (H, W) or "
                          f"(N, H, W) with N = {count}")
    return region.bool()


def _per_image(boxes: Any, count: int) -> list[list[Box]]:
    def is_box(value: Any) -> bool:
        return isinstance(value, (Sequence, np.ndarray, torch.Tensor)) and len(value) == 4 \
            and all(isinstance(v, (int, float, np.number)) or
                    (isinstance(v, torch.Tensor) and v.ndim == 0) for v in value)

    if is_box(boxes):
        return [[boxes]] * count
    if isinstance(boxes, (Sequence, np.ndarray)) and len(boxes) == count:
        per_image = [[b] if is_box(b) else list(b) for b in boxes]
        if all(is_box(b) for image_boxes in per_image for b in image_boxes):
            return per_image
    raise MetricError(f"boxes must be one box (x0, y0, x1, y1) for every image, or {count} "
                      "entries (one per image), each a box or a list of boxes")


def _distance(region: np.ndarray, row: int, col: int) -> float:
    """Euclidean distance in pixels from ``(row, col)`` to the nearest pixel of ``region``."""
    if not region.any():
        return float("nan")
    if region[row, col]:
        return 0.0
    return float(ndimage.distance_transform_edt(~region)[row, col])
