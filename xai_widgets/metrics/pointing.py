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

from ..errors import MetricError, ParameterError
from ..explanation import Explanation
from ..images import Preprocessing
from ..render import Channels, Polarity, RenderSettings
from .spec import Case, Column, MetricSpec, number
from .subject import check_maps, pixel_values, warn_if_constant

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
    check_tolerance(tolerance)
    values, region = _values_and_region(maps, boxes, masks, size, channels, polarity, None)
    warn_if_constant(values, "the maximum point is the first pixel, the top-left corner")
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


def check_tolerance(tolerance: Any) -> None:
    """A :class:`ParameterError` unless ``tolerance`` is a finite number of pixels >= 0."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or \
            not 0 <= tolerance < float("inf"):
        raise ParameterError(f"tolerance is a number of pixels >= 0 (the paper uses 15), got "
                             f"{tolerance!r}")


def check_box(box: Box) -> None:
    """A :class:`MetricError` unless the four coordinates of ``box`` are finite numbers."""
    if not all(np.isfinite(float(v)) for v in box):
        raise MetricError(f"the box {[float(v) for v in box]} has a coordinate that is not a "
                          "finite number; a box is (x0, y0, x1, y1) in pixels")


def measure_pointing(case: Case, _names: tuple[str, ...]) -> dict[str, Any]:
    """Hit (1/0) and distance of one image of a folder evaluation; ``None`` without a box."""
    if case.region is None:
        return {"pointing": None, "pointing_distance": None}
    hit = pointing_game(case.explanation, masks=case.region, tolerance=case.settings.tolerance)
    return {"pointing": number(hit.hits[0]), "pointing_distance": number(hit.distances[0])}


def measure_energy(case: Case, _names: tuple[str, ...]) -> dict[str, Any]:
    """The share of the map's energy on the object; ``None`` without a box."""
    if case.region is None:
        return {"energy_pointing": None}
    return {"energy_pointing": number(energy_pointing_game(case.explanation,
                                                           masks=case.region)[0])}


SPECS = (
    MetricSpec("pointing", "Pointing game", "is the map's maximum on the object?",
               "Zhang, Bargal, Lin, Brandt, Shen, Sclaroff. Top-down Neural Attention by "
               "Excitation Backprop. ECCV 2016. arXiv:1608.00507",
               (Column("pointing", "pointing game hits", "higher", proportion=True),),
               "instant", measure_pointing, needs_boxes=True),
    MetricSpec("energy_pointing", "Energy pointing game", "share of the map's energy on the "
               "object", "Wang et al. Score-CAM. CVPR-W 2020. arXiv:1910.01279",
               (Column("energy_pointing", "energy on the object", "higher"),), "instant",
               measure_energy, needs_boxes=True),
)


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
        shape = (int(region.shape[-2]), int(region.shape[-1]))
        if size is not None and shape != tuple(size):
            raise MetricError(f"the masks are {shape[0]}×{shape[1]} but the model input is "
                              f"{size[0]}×{size[1]}: a mask marks the object in input pixels; "
                              "give masks of the input's size, or boxes of the photo mapped "
                              "with box_to_input")
        size = shape
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

    per_image: list[list[Box]] | None = None
    if is_box(boxes):
        per_image = [[boxes]] * count
    elif isinstance(boxes, (Sequence, np.ndarray)) and len(boxes) == count:
        listed = [[b] if is_box(b) else list(b) for b in boxes]
        if all(is_box(b) for image_boxes in listed for b in image_boxes):
            per_image = listed
    if per_image is None:
        raise MetricError(f"boxes must be one box (x0, y0, x1, y1) for every image, or {count} "
                          "entries (one per image), each a box or a list of boxes")
    for image_boxes in per_image:
        for box in image_boxes:
            check_box(box)
    return per_image


def _distance(region: np.ndarray, row: int, col: int) -> float:
    """Euclidean distance in pixels from ``(row, col)`` to the nearest pixel of ``region``."""
    if not region.any():
        return float("nan")
    if region[row, col]:
        return 0.0
    return float(ndimage.distance_transform_edt(~region)[row, col])
