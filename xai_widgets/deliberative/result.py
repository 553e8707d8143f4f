"""The result of :func:`~xai_widgets.deliberative.insecurities` for one image: the difficulty
(score and map), the top classes and their maps, the ranked ambiguous pairs with their
insecurity maps, segments by area fraction, and pictures (ours and the original display).

Wang, Vasconcelos. "Deliberative Explanations: visualizing network insecurities." NeurIPS 2019.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError, TargetError
from ..figures import ShowsFigure
from ..models import ModelBundle
from ..render import colourise
from .ambiguity import check_area, top_fraction, upsample

Style = Literal["ours", "original"]
STYLES = ("ours", "original")
#: brightness of the background in the original display
ORIGINAL_BACKGROUND = 0.4


@dataclass(frozen=True)
class Difficulty:
    """How hard the image is: ``score`` (``s(x)``, higher = harder), ``kind`` (cs, entropy,
    hp), ``label`` (in words), and the difficulty map ``map`` ``(h, w)`` at the layer (raw,
    ≥ 0 for the gradient attributions) with, for ``gradient_hessian``, its ``first_order`` and
    ``second_order`` terms."""

    kind: str
    label: str
    score: float
    map: torch.Tensor
    attribution: str
    first_order: torch.Tensor | None = None
    second_order: torch.Tensor | None = None
    closed_form: bool | None = None

    def __repr__(self) -> str:
        return (f"Difficulty({self.kind}: {self.score:.4f}, map "
                f"{'×'.join(map(str, self.map.shape))}, {self.attribution})")


@dataclass(frozen=True)
class Pair:
    """An ambiguous pair of classes ``a`` (the more probable) and ``b``: ``names``, ``ranks``
    (their positions among the top classes), ``mass`` (mean insecurity over the cells),
    ``score`` (``mass · √(p_a p_b)``, what pairs are ranked by), ``cells`` (cells where both
    are among the per-cell top classes) and the insecurity ``map`` ``(h, w)`` (the triple
    product of the prepared maps)."""

    a: int
    b: int
    names: tuple[str, str]
    ranks: tuple[int, int]
    score: float
    mass: float
    cells: int
    map: torch.Tensor

    @property
    def label(self) -> str:
        return f"{self.names[0]} – {self.names[1]}"

    def __repr__(self) -> str:
        return f"Pair({self.label}, score {self.score:.4f}, {self.cells} cells)"


@dataclass(frozen=True)
class Segment:
    """The region of a pair's insecurity kept at ``area``: ``mask`` bool ``(H, W)`` in the
    model input's pixels, ``values`` the insecurity upsampled to that size."""

    pair: Pair
    area: float
    mask: torch.Tensor
    values: torch.Tensor

    @property
    def pixels(self) -> int:
        return int(self.mask.sum())


@dataclass
class InsecurityResult(ShowsFigure):
    """Insecurities of one image (see :mod:`xai_widgets.deliberative`).

    ``classes``: the top classes ``(index, name, probability)``; ``class_maps`` ``(R, h, w)``,
    raw and signed, in that order; ``difficulty``; ``pairs`` ranked by score; ``display`` the
    photo as the model saw it ``(Hd, Wd, 3)``; ``input_size`` the model input ``(H, W)``.
    """

    bundle: ModelBundle
    name: str
    layer: str
    attribution: str
    normalise: bool
    per_cell: int
    classes: list[tuple[int, str, float]]
    class_maps: torch.Tensor
    difficulty: Difficulty
    pairs: list[Pair]
    display: np.ndarray
    input_size: tuple[int, int]
    logits: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ pairs and segments

    def pair(self, which: Pair | int | tuple[Any, Any] | str) -> Pair:
        """A pair by object, by rank in :attr:`pairs` (0 = most insecure), by its two classes
        (indices or names, either order), or by label ``"a – b"``."""
        if isinstance(which, Pair):
            return which
        if isinstance(which, (int, np.integer)) and not isinstance(which, bool):
            if not 0 <= int(which) < len(self.pairs):
                raise ParameterError(f"pair rank {which} is out of range: this image has "
                                     f"{len(self.pairs)} ambiguous pairs "
                                     f"(0..{len(self.pairs) - 1})")
            return self.pairs[int(which)]
        if isinstance(which, str) and "–" in which:
            first, second = which.split("–", 1)
            which = (first.strip(), second.strip())
        if isinstance(which, (tuple, list)) and len(which) == 2:
            wanted = {self._class_index(c) for c in which}
            for pair in self.pairs:
                if {pair.a, pair.b} == wanted:
                    return pair
            names = " and ".join(self.bundle.class_name(c) for c in sorted(wanted))
            raise TargetError(f"{names} are not an ambiguous pair of this image; its pairs: "
                              f"{', '.join(p.label for p in self.pairs) or 'none'}")
        raise ParameterError(f"a pair is a Pair, a rank in .pairs, or two classes (indices or "
                             f"names), got {which!r}")

    def _class_index(self, value: Any) -> int:
        top = {index: name for index, name, _ in self.classes}
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if int(value) in top:
                return int(value)
        elif isinstance(value, str):
            for index, name in top.items():
                if name.lower() == value.strip().lower():
                    return index
        raise TargetError(f"{value!r} is not one of the top classes of this image: "
                          f"{', '.join(f'{i} {n}' for i, n in top.items())}")

    def segment(self, pair: Pair | int | tuple[Any, Any] | str = 0,
                area: float = 0.1) -> Segment:
        """The ``area`` fraction of the input's pixels where ``pair``'s insecurity is largest."""
        area = check_area(area)
        chosen = self.pair(pair)
        values = upsample(chosen.map, self.input_size)
        return Segment(chosen, area, top_fraction(values, area), values)

    # ------------------------------------------------------------------ pictures

    def picture(self, pair: Pair | int | tuple[Any, Any] | str = 0, area: float | None = 0.1,
                style: Style = "ours") -> np.ndarray:
        """The photo with ``pair``'s insecurity: ``ours`` (the map as a heat layer, the
        segment outlined) or ``original`` (background darkened to 40 %, the segment at full
        intensity), uint8 ``(Hd, Wd, 3)``. ``area=None``: no segment (ours only)."""
        if style not in STYLES:
            raise ParameterError(f"style must be 'ours' or 'original', got {style!r}")
        chosen = self.pair(pair)
        size = (int(self.display.shape[0]), int(self.display.shape[1]))
        photo = self.display.astype(np.float32)
        mask = None if area is None else _to_display(self.segment(chosen, area).mask, size)
        if style == "original":
            if mask is None:
                raise ParameterError("the original display needs an area (its segment)")
            shade = np.where(mask[..., None], 1.0, ORIGINAL_BACKGROUND)
            return np.round(photo * shade).astype(np.uint8)
        return overlay(self.display, chosen.map, mask)

    def difficulty_picture(self) -> np.ndarray:
        """The photo with the difficulty map as a heat layer, uint8 ``(Hd, Wd, 3)``."""
        return overlay(self.display, self.difficulty.map, None)

    def figure(self, pairs: int = 3, area: float = 0.1, style: Style = "ours") -> Any:
        """The difficulty map and the ``pairs`` most insecure pairs with their segments."""
        from matplotlib.figure import Figure

        shown = self.pairs[:pairs]
        panels = 1 + len(shown)
        figure = Figure(figsize=(3.3 * panels, 3.9), layout="constrained")
        axes = figure.subplots(1, panels, squeeze=False)[0]
        axes[0].imshow(self.difficulty_picture())
        axes[0].set_title(f"difficulty ({self.difficulty.kind}) {self.difficulty.score:.3f}\n"
                          f"{self.attribution} · layer {self.layer}", fontsize=8)
        for ax, pair in zip(axes[1:], shown, strict=True):
            ax.imshow(self.picture(pair, area, style))
            ax.set_title(f"{pair.names[0]} –\n{pair.names[1]} · {pair.score:.3g} "
                         f"(top {area:.0%})", fontsize=8)
        for ax in axes:
            ax.set_axis_off()
        top = ", ".join(f"{name} {p:.0%}" for _, name, p in self.classes[:3])
        generic = self.name.split(" ")[0] in ("image", "input") and \
            self.name.split(" ")[-1].replace(".", "").isdigit()
        figure.suptitle(top if generic else f"{self.name}: {top}", fontsize=9)
        return figure

    def to_dict(self, maps: bool = True) -> dict[str, Any]:
        """A JSON-ready summary: classes, difficulty, pairs (and their maps at the layer)."""
        def grid(t: torch.Tensor) -> list[list[float]]:
            return [[round(float(v), 6) for v in row] for row in t.double()]

        record: dict[str, Any] = {
            "image": self.name, "layer": self.layer, "attribution": self.attribution,
            "normalise": self.normalise,
            "classes": [{"index": i, "name": n, "probability": round(p, 6)}
                        for i, n, p in self.classes],
            "difficulty": {"kind": self.difficulty.kind,
                           "score": round(self.difficulty.score, 6)},
            "pairs": [{"a": p.a, "b": p.b, "names": list(p.names),
                       "score": round(p.score, 8), "mass": round(p.mass, 8),
                       "cells": p.cells} for p in self.pairs],
        }
        if maps:
            record["difficulty"]["map"] = grid(self.difficulty.map)
            for entry, pair in zip(record["pairs"], self.pairs, strict=True):
                entry["map"] = grid(pair.map)
        return record

    def __repr__(self) -> str:
        pairs = "; ".join(f"{p.label} {p.score:.3g}" for p in self.pairs[:3])
        return (f"InsecurityResult({self.name!r}, {self.difficulty.kind} "
                f"{self.difficulty.score:.3f}, {len(self.pairs)} pairs: {pairs}"
                f"{' ...' if len(self.pairs) > 3 else ''})")


def _to_display(mask: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A mask at the input resolution -> the display's (nearest: same field of view)."""
    if tuple(mask.shape) == size:
        return mask.cpu().numpy()
    up = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0]
    return (up > 0.5).cpu().numpy()


def overlay(display: np.ndarray, raw: torch.Tensor, mask: np.ndarray | None,
            opacity: float = 0.55, cmap: str = "inferno") -> np.ndarray:
    """Our display: the map (≥ 0, scaled by its maximum) as a heat layer over the photo, its
    opacity growing with the value (``opacity · √m``), and the segment's outline in cyan."""
    size = (int(display.shape[0]), int(display.shape[1]))
    values = upsample(raw.double().clamp(min=0), size).float()
    top = float(values.max())
    unit = values / top if top > 0 else values
    heat = colourise(unit[None], cmap, False, opacity)[0]
    # alpha grows with the value: where there is no insecurity the photo shows through
    alpha = opacity * np.sqrt(unit.numpy())[..., None].astype(np.float32)
    out = heat[..., :3] * alpha + display.astype(np.float32) * (1 - alpha)
    if mask is not None:
        inside = torch.from_numpy(mask)[None, None].float()
        eroded = -F.max_pool2d(-inside, 3, stride=1, padding=1)
        edge = (inside - eroded)[0, 0].numpy() > 0
        thick = F.max_pool2d(torch.from_numpy(edge)[None, None].float(), 3, stride=1,
                             padding=1)[0, 0].numpy() > 0
        out[thick] = (0, 229, 255)
    return np.round(out).astype(np.uint8)
