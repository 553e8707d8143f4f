"""Ambiguities: class pairs, insecurity maps and segments (pure tensor functions).

For the top classes' maps ``a_c`` ``(R, h, w)`` and the difficulty map ``d`` ``(h, w)``:

1. each map is made non-negative and, by default (``normalise=True``), scaled to [0, 1] by its
   own maximum: ``â = [a]_+ / max [a]_+`` (zero stays zero). The original code multiplied the
   raw maps, so the class with the larger logit scale dominated every product; ``normalise=False``
   keeps that behaviour (negative values become 1e-7, as in the original);
2. at each cell the ``per_cell`` (default 3) classes with the largest maps are ranked, and every
   pair among them is a candidate; the ambiguity set is the union over the cells. With
   ``normalise=True`` a cell counts for a pair only where both maps are positive (no evidence
   for a class, no hesitation about it); the original counted every cell;
3. the insecurity of a pair is the triple product ``m_ab = â_a ⊙ â_b ⊙ d̂``; its score is the
   mean of ``m_ab`` over the cells; pairs are ranked by score;
4. a segment keeps the ``area`` fraction of pixels with the largest insecurity, at the model's
   input resolution (the map upsampled bilinearly): exactly ``max(1, round(area · H · W))``
   pixels, ties broken by pixel order.

Wang, Vasconcelos. "Deliberative Explanations: visualizing network insecurities." NeurIPS 2019.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ParameterError

#: what the original code put in place of negative attributions
ORIGINAL_FLOOR = 1e-7


def prepare_maps(maps: torch.Tensor, normalise: bool) -> torch.Tensor:
    """Step 1 on maps ``(..., h, w)``: non-negative, each scaled by its maximum if
    ``normalise``; else negative values (and zeros) become 1e-7 as in the original."""
    maps = maps.double()
    if not normalise:
        return maps.clamp(min=ORIGINAL_FLOOR)
    positive = maps.clamp(min=0)
    top = positive.flatten(-2).amax(dim=-1)[..., None, None]
    return torch.where(top > 0, positive / top.clamp(min=1e-300), torch.zeros_like(positive))


def pair_set(class_maps: torch.Tensor, per_cell: int = 3,
             require_positive: bool = True) -> dict[tuple[int, int], int]:
    """Step 2: ``{(r, s): number of cells}`` for the rank pairs ``r < s`` found among the
    ``per_cell`` largest of ``class_maps`` ``(R, h, w)`` at some cell."""
    if per_cell < 2:
        raise ParameterError(f"per_cell must be at least 2 (a pair needs two classes), got "
                             f"{per_cell}")
    count, h, w = class_maps.shape
    keep = min(per_cell, count)
    flat = class_maps.reshape(count, h * w)
    order = torch.argsort(-flat, dim=0, stable=True)[:keep]  # (keep, cells)
    positive = torch.gather(flat, 0, order) > 0  # (keep, cells)
    counts = torch.zeros(count * count, dtype=torch.long, device=flat.device)
    for i in range(keep):
        for j in range(i + 1, keep):
            a, b = torch.minimum(order[i], order[j]), torch.maximum(order[i], order[j])
            use = positive[i] & positive[j] if require_positive else torch.ones_like(a,
                                                                                  dtype=torch.bool)
            counts.index_add_(0, (a * count + b)[use], torch.ones_like(a[use]))
    pairs = counts.nonzero()[:, 0].tolist()
    return {(p // count, p % count): int(counts[p]) for p in pairs}


def insecurity(prepared_a: torch.Tensor, prepared_b: torch.Tensor,
               prepared_difficulty: torch.Tensor) -> torch.Tensor:
    """Step 3: the triple product ``â_a ⊙ â_b ⊙ d̂``."""
    return prepared_a * prepared_b * prepared_difficulty


def check_area(area: float) -> float:
    if isinstance(area, bool) or not isinstance(area, (int, float)) or math.isnan(area) \
            or not 0 < area <= 1:
        raise ParameterError(f"area is the fraction of the image a segment keeps: a number in "
                             f"(0, 1] (0.1 keeps the top 10 %), got {area!r}")
    return float(area)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(..., h, w)`` -> ``(..., H, W)`` bilinear (align_corners=False)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).double()
    up = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return up.reshape(*lead, *size)


def top_fraction(values: torch.Tensor, area: float) -> torch.Tensor:
    """Step 4: bool mask of the ``max(1, round(area · pixels))`` largest values of ``(H, W)``
    (ties broken by pixel order)."""
    area = check_area(area)
    flat = values.reshape(-1)
    keep = max(1, round(area * flat.numel()))
    order = torch.argsort(-flat, stable=True)[:keep]
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=values.device)
    mask[order] = True
    return mask.view(values.shape)
