"""Evaluation of insecurities against annotations, in the geometry the model saw.

Part points (CUB-style): an insecurity of the pair ``(a, b)`` is good when its segment covers
the parts the two classes *share* (where a person would also hesitate). Per pair and per area
fraction ``r``:

    recall(r)    = |common visible parts inside the segment| / |common visible parts|
    precision(r) = |common visible parts inside the segment| / |visible parts inside the segment|

Object masks (ADE20K-style): ``IoU(segment, union of the objects the two classes share)``.

Which parts or objects two classes share comes from a user table: per-part divergences between
classes (:func:`common_parts`: the parts whose divergence is at most the ``quantile`` of the
table, 20 % in the original), or object similarities (:func:`common_objects`); helpers build
them from class attribute tables (:func:`part_divergence`, the Endres–Schindelin divergence of
softmaxed attribute groups) and from object frequencies (:func:`object_similarity`).

What the original got wrong and this module does not:

* part points were scaled by ``x · 224 / W``, ``y · 224 / H`` while the network saw
  Resize(256) + CenterCrop(224): here :func:`points_to_input` applies the preprocessing's own
  resize and crop, and points outside the crop are invisible to the model;
* object masks were shrunk with ``np.resize`` (a reshape, not a resampling): here
  :func:`mask_to_input` resamples the crop the model saw, nearest neighbour;
* pairs without a common part were skipped but kept in the denominator (recall 0): here they
  are excluded and counted (``no_common``), as are pairs whose common parts are all
  invisible (``invisible``);
* the 99th percentile of an object table that is mostly zeros is 0, which made every object
  "common": here only entries above 0 can be common.

Wang, Vasconcelos. "Deliberative Explanations: visualizing network insecurities." NeurIPS 2019.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ParameterError
from ..images import Preprocessing
from .ambiguity import check_area
from .result import InsecurityResult

#: the original's sweep of area fractions
AREAS = tuple(round(0.01 * i, 2) for i in range(1, 100))

PairKey = tuple[int, int]


def _key(a: int, b: int) -> PairKey:
    return (a, b) if a <= b else (b, a)


def _areas(areas: Iterable[float]) -> tuple[float, ...]:
    chosen = tuple(check_area(float(a)) for a in areas)
    if not chosen:
        raise ParameterError("give at least one area fraction, e.g. areas=(0.1,)")
    return chosen


# ---------------------------------------------------------------------------- geometry


def points_to_input(points: Mapping[str, Sequence[float] | None], image_size: tuple[int, int],
                    preprocessing: Preprocessing) -> dict[str, tuple[float, float] | None]:
    """Part points ``name -> (x, y)`` in pixels of the original photo (``image_size`` =
    its ``(width, height)``; ``None`` = not visible) -> the same points in pixels of the model
    input (the preprocessing's resize and centre crop); ``None`` for points the crop cuts off."""
    left, top, right, bottom = preprocessing.crop_box(*image_size)
    crop_h, crop_w = preprocessing.crop
    sx, sy = crop_w / (right - left), crop_h / (bottom - top)
    out: dict[str, tuple[float, float] | None] = {}
    for name, point in points.items():
        if point is None:
            out[name] = None
            continue
        x, y = (float(v) for v in point)
        u, v = (x - left) * sx, (y - top) * sy
        out[name] = (u, v) if 0 <= u < crop_w and 0 <= v < crop_h else None
    return out


def mask_to_input(mask: np.ndarray | torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """A label or bool mask ``(H0, W0)`` of the original photo -> ``(H, W)`` of the model input:
    the crop the model saw, resampled nearest neighbour (labels stay labels)."""
    array = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2:
        raise ParameterError(f"a mask is (H, W), got shape {array.shape}")
    dtype = array.dtype
    if dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.min() < 0 or array.max() > np.iinfo(np.int32).max:
        raise ParameterError("mask labels must be integers in [0, 2**31)")
    picture = Image.fromarray(array.astype(np.int32), mode="I")
    crop_h, crop_w = preprocessing.crop
    box = preprocessing.crop_box(picture.width, picture.height)
    resized = picture.resize((crop_w, crop_h), Image.Resampling.NEAREST, box=box)
    out = torch.from_numpy(np.asarray(resized).astype(np.int64))
    return out.bool() if dtype == np.bool_ else out


# ---------------------------------------------------------------------------- parts


@dataclass
class PartScores:
    """Precision and recall of one image's segments against common parts.

    ``pairs``: the pairs evaluated; ``precision``/``recall``: ``(pairs, areas)`` (NaN where
    undefined: no visible part inside the segment); ``no_common``: pairs the table gives no
    common part; ``invisible``: pairs whose common parts are all invisible (both excluded)."""

    areas: tuple[float, ...]
    pairs: list[PairKey]
    precision: np.ndarray
    recall: np.ndarray
    no_common: list[PairKey] = field(default_factory=list)
    invisible: list[PairKey] = field(default_factory=list)

    def mean(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean precision and recall over the pairs, per area (NaN where no pair counts)."""
        return _nanmean(self.precision), _nanmean(self.recall)


def _nanmean(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return np.full(values.shape[-1] if values.ndim == 2 else 0, np.nan)
    counts = np.sum(~np.isnan(values), axis=0)
    sums = np.nansum(values, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _pixel(point: tuple[float, float], size: tuple[int, int]) -> tuple[int, int]:
    x, y = point
    return min(math.floor(y), size[0] - 1), min(math.floor(x), size[1] - 1)


def part_scores(result: InsecurityResult, parts: Mapping[str, Sequence[float] | None],
                common: Mapping[PairKey, Iterable[str]], areas: Iterable[float] = AREAS
                ) -> PartScores:
    """Precision and recall of every ambiguous pair's segment, per area fraction.

    ``parts``: ``name -> (x, y)`` in pixels **of the model input** (map photo coordinates with
    :func:`points_to_input` first), ``None`` for a part that is not visible. ``common``:
    ``(class a, class b) -> part names`` (either order; see :func:`common_parts`)."""
    chosen = _areas(areas)
    size = result.input_size
    visible = {name: _pixel((float(p[0]), float(p[1])), size) for name, p in parts.items()
               if p is not None}
    table = {_key(*k): set(v) for k, v in common.items()}
    evaluated: list[PairKey] = []
    precision: list[list[float]] = []
    recall: list[list[float]] = []
    no_common: list[PairKey] = []
    invisible: list[PairKey] = []
    for pair in result.pairs:
        key = _key(pair.a, pair.b)
        shared = table.get(key, set())
        if not shared:
            no_common.append(key)
            continue
        seen = [name for name in shared if name in visible]
        if not seen:
            invisible.append(key)
            continue
        evaluated.append(key)
        row_p, row_r = [], []
        for area in chosen:
            mask = result.segment(pair, area).mask
            inside = {name for name, (i, j) in visible.items() if bool(mask[i, j])}
            hits = len(inside & set(seen))
            row_r.append(hits / len(seen))
            row_p.append(hits / len(inside) if inside else math.nan)
        precision.append(row_p)
        recall.append(row_r)
    shape = (len(evaluated), len(chosen))
    return PartScores(chosen, evaluated, np.array(precision, dtype=np.float64).reshape(shape),
                      np.array(recall, dtype=np.float64).reshape(shape), no_common, invisible)


def average(scores: Sequence[PartScores]) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall curves over images: per image the mean over its pairs, then the
    mean over the images where it is defined (NaN-free images only count)."""
    if not scores:
        raise ParameterError("no scores to average")
    precision = np.stack([s.mean()[0] for s in scores])
    recall = np.stack([s.mean()[1] for s in scores])
    return _nanmean(precision), _nanmean(recall)


# ---------------------------------------------------------------------------- objects


@dataclass
class ObjectScores:
    """IoU of each evaluated pair's segment with its common objects ``(pairs, areas)``;
    ``no_common``: pairs without common objects; ``absent``: pairs whose common objects are
    not in this image (both excluded)."""

    areas: tuple[float, ...]
    pairs: list[PairKey]
    iou: np.ndarray
    no_common: list[PairKey] = field(default_factory=list)
    absent: list[PairKey] = field(default_factory=list)

    def mean(self) -> np.ndarray:
        return _nanmean(self.iou)


def object_scores(result: InsecurityResult, objects: np.ndarray | torch.Tensor,
                  common: Mapping[PairKey, Iterable[int]], areas: Iterable[float] = AREAS
                  ) -> ObjectScores:
    """IoU between every ambiguous pair's segment and the union of the objects the pair
    shares. ``objects``: an integer label mask **at the model input's size** (map the photo's
    annotation with :func:`mask_to_input`)."""
    chosen = _areas(areas)
    labels = torch.as_tensor(np.asarray(objects) if not isinstance(objects, torch.Tensor)
                             else objects)
    if tuple(labels.shape) != tuple(result.input_size):
        raise ParameterError(f"the object mask is {tuple(labels.shape)}, the model input "
                             f"{tuple(result.input_size)}: map it with mask_to_input first")
    table = {_key(*k): {int(o) for o in v} for k, v in common.items()}
    evaluated, rows, no_common, absent = [], [], [], []
    for pair in result.pairs:
        key = _key(pair.a, pair.b)
        shared = table.get(key, set())
        if not shared:
            no_common.append(key)
            continue
        region = torch.isin(labels, torch.tensor(sorted(shared), dtype=labels.dtype))
        if not bool(region.any()):
            absent.append(key)
            continue
        evaluated.append(key)
        row = []
        for area in chosen:
            mask = result.segment(pair, area).mask
            union = int((mask | region).sum())
            row.append(int((mask & region).sum()) / union)
        rows.append(row)
    iou = np.array(rows, dtype=np.float64).reshape(len(evaluated), len(chosen))
    return ObjectScores(chosen, evaluated, iou, no_common, absent)


# ---------------------------------------------------------------------------- tables


def endres_schindelin(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``Σ p log(2p/(p+q)) + q log(2q/(p+q))`` over the last axis (= 2 · Jensen–Shannon)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(p / m), 0.0)
        b = np.where(q > 0, q * np.log(q / m), 0.0)
    return (a + b).sum(axis=-1)


def part_divergence(attributes: np.ndarray, groups: Mapping[str, Sequence[Sequence[int]]]
                    ) -> tuple[np.ndarray, list[str]]:
    """Per-part divergences between classes ``(C, C, parts)`` from a class attribute table
    ``(C, A)`` (e.g. CUB's percentages): for each attribute group (column indices) a softmax
    per class, the Endres–Schindelin divergence between classes, and per part the mean over
    its groups. ``groups``: ``part -> [column indices of group 1, of group 2, ...]``."""
    table = np.asarray(attributes, dtype=np.float64)
    if table.ndim != 2:
        raise ParameterError(f"the attribute table is (classes, attributes), got {table.shape}")
    names = list(groups)
    out = np.zeros((table.shape[0], table.shape[0], len(names)))
    for index, name in enumerate(names):
        parts = []
        for columns in groups[name]:
            values = table[:, list(columns)]
            values = np.exp(values - values.max(axis=1, keepdims=True))
            values /= values.sum(axis=1, keepdims=True)
            parts.append(endres_schindelin(values[:, None, :], values[None, :, :]))
        if not parts:
            raise ParameterError(f"part {name!r} has no attribute group")
        out[:, :, index] = np.mean(parts, axis=0)
    return out, names


def common_parts(divergence: np.ndarray, part_names: Sequence[str], quantile: float = 0.2
                 ) -> dict[PairKey, tuple[str, ...]]:
    """``(a, b) -> parts`` whose divergence between classes a and b is at most the
    ``quantile`` of the whole table ``(C, C, parts)`` (the original: 20 %)."""
    table = np.asarray(divergence, dtype=np.float64)
    if table.ndim != 3 or table.shape[0] != table.shape[1] or table.shape[2] != len(part_names):
        raise ParameterError(f"the divergence table is (classes, classes, parts) with "
                             f"{len(part_names)} parts, got {table.shape}")
    if not 0 < quantile <= 1:
        raise ParameterError(f"quantile must lie in (0, 1], got {quantile}")
    threshold = float(np.quantile(table, quantile))
    out: dict[PairKey, tuple[str, ...]] = {}
    classes = table.shape[0]
    for a in range(classes):
        for b in range(a + 1, classes):
            shared = tuple(part_names[int(k)] for k in np.flatnonzero(table[a, b] <= threshold))
            if shared:
                out[(a, b)] = shared
    return out


def object_similarity(frequency: np.ndarray, floor: float = 0.3) -> np.ndarray:
    """``(C, C, O)`` similarities from per-class object frequencies ``(C, O)`` (share of the
    class's images that contain the object): frequencies below ``floor`` count as 0;
    ``sim(a, b, o) = (f_a + f_b)/2`` where both are positive, else 0."""
    f = np.asarray(frequency, dtype=np.float64)
    f = np.where(f < floor, 0.0, f)
    both = (f[:, None, :] > 0) & (f[None, :, :] > 0)
    return np.where(both, (f[:, None, :] + f[None, :, :]) / 2, 0.0)


def common_objects(similarity: np.ndarray, percentile: float = 99.0
                   ) -> dict[PairKey, tuple[int, ...]]:
    """``(a, b) -> objects`` whose similarity is at least the ``percentile`` of the table
    ``(C, C, O)`` **and above 0** (a mostly-zero table has a 0 percentile, which made every
    object common in the original)."""
    table = np.asarray(similarity, dtype=np.float64)
    if table.ndim != 3 or table.shape[0] != table.shape[1]:
        raise ParameterError(f"the similarity table is (classes, classes, objects), got "
                             f"{table.shape}")
    if not 0 < percentile <= 100:
        raise ParameterError(f"percentile must lie in (0, 100], got {percentile}")
    threshold = float(np.percentile(table, percentile))
    out: dict[PairKey, tuple[int, ...]] = {}
    for a in range(table.shape[0]):
        for b in range(a + 1, table.shape[0]):
            shared = tuple(int(o) for o in np.flatnonzero((table[a, b] >= threshold)
                                                          & (table[a, b] > 0)))
            if shared:
                out[(a, b)] = shared
    return out


def describe(scores: PartScores | ObjectScores) -> dict[str, Any]:
    """A JSON-ready summary (mean curves and counts)."""
    if isinstance(scores, PartScores):
        precision, recall = scores.mean()
        return {"areas": list(scores.areas), "precision": precision.tolist(),
                "recall": recall.tolist(), "pairs": len(scores.pairs),
                "no_common": len(scores.no_common), "invisible": len(scores.invisible)}
    return {"areas": list(scores.areas), "iou": scores.mean().tolist(),
            "pairs": len(scores.pairs), "no_common": len(scores.no_common),
            "absent": len(scores.absent)}
