"""Raw map -> unit map -> RGBA: every post-processing step, named and visible.

Kernels return raw, signed maps (DESIGN rule 1). What a person sees is decided here, by a
:class:`RenderSettings`, in this order:

1. ``channels``   per-channel maps ``(N, C, H, W)`` -> one value per pixel
                  (``max_abs``: Simonyan et al.; ``sum_abs``: the original projects' grey
                  gradient; ``sum``: signed total);
2. ``polarity``   ``positive`` (the ReLU of Grad-CAM), ``negative``, ``absolute``, ``signed``;
3. ``clip_percentile`` the level of the map's top (that percentile of |m|, 99 for gradients);
4. upsample       to the display size (bilinear by default);
5. normalise      per image, dividing by that level and clipping: zero stays zero;
6. colour         a perceptually uniform colormap for unsigned maps, a diverging one centred
                  on zero for signed maps; never jet; ``opacity`` is the heat layer's alpha
                  (times |m| for signed maps, so that zero is transparent).

``gradient_view`` renders per-channel gradients as pictures, as guided backprop's authors
did: ``colour`` (min-max of the RGB gradient), ``gray`` (``G = Σ|g|`` stretched from its
minimum to its 99th percentile: ``(G − min G) / (P99 − min G)``, clipped), ``positive``
([g]_+ / max g) and ``negative`` ([-g]_+ / -min g).

Every setting is checked when a :class:`RenderSettings` is made (a :class:`ParameterError`
that names the accepted values), so a bad colormap or opacity fails before anything renders.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

from .errors import ParameterError, did_you_mean

Polarity = Literal["positive", "negative", "absolute", "signed"]
Channels = Literal["max_abs", "sum_abs", "sum", "l2"]
GradientView = Literal["colour", "gray", "positive", "negative"]
Resampling = Literal["bilinear", "bicubic", "nearest"]

UNSIGNED_COLORMAPS = ("inferno", "viridis", "magma", "plasma", "cividis", "gray")
SIGNED_COLORMAPS = ("RdBu_r", "coolwarm", "PuOr_r", "PiYG")
POLARITIES: tuple[Polarity, ...] = ("positive", "negative", "absolute", "signed")
CHANNELS: tuple[Channels, ...] = ("max_abs", "sum_abs", "sum", "l2")
GRADIENT_VIEWS: tuple[GradientView, ...] = ("colour", "gray", "positive", "negative")
RESAMPLINGS: tuple[Resampling, ...] = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class RenderSettings:
    """How a raw map is shown. ``cmap=None`` picks inferno (unsigned) or RdBu_r (signed)."""

    polarity: Polarity = "positive"
    channels: Channels = "max_abs"
    gradient_view: GradientView | None = None
    clip_percentile: float = 100.0
    cmap: str | None = None
    opacity: float = 0.5
    resampling: Resampling = "bilinear"

    def __post_init__(self) -> None:
        check_choice("polarity", self.polarity, POLARITIES)
        check_choice("channels", self.channels, CHANNELS)
        if self.gradient_view is not None:
            check_choice("gradient_view", self.gradient_view, GRADIENT_VIEWS)
        check_choice("resampling", self.resampling, RESAMPLINGS)
        if self.cmap is not None:
            check_colormap(self.cmap)
        check_fraction("clip_percentile", self.clip_percentile, 100.0,
                       "99 clips the top 1 % of values, 100 shows the maximum", zero_ok=False)
        check_fraction("opacity", self.opacity, 1.0, "0 shows only the photo, 1 only the heat")

    def updated(self, **changes: object) -> RenderSettings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def signed(self) -> bool:
        return self.gradient_view is None and self.polarity == "signed"

    @property
    def colormap(self) -> str:
        if self.cmap is not None:
            return self.cmap
        return SIGNED_COLORMAPS[0] if self.signed else UNSIGNED_COLORMAPS[0]


def check_choice(setting: str, value: object, choices: Sequence[str]) -> None:
    """A :class:`ParameterError` unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        hint = did_you_mean(str(value), choices)
        raise ParameterError(f"unknown {setting} {value!r}; choose one of "
                             f"{', '.join(map(repr, choices))}" + (f" ({hint})" if hint else ""))


def check_colormap(name: object) -> None:
    """A :class:`ParameterError` unless ``name`` is a matplotlib colormap."""
    if not isinstance(name, str) or name not in matplotlib.colormaps:
        hint = did_you_mean(str(name), list(matplotlib.colormaps))
        raise ParameterError(
            f"unknown colormap {name!r}; {hint or 'any name in matplotlib.colormaps works'} "
            f"(perceptually uniform: {', '.join(UNSIGNED_COLORMAPS)}; diverging, for signed "
            f"maps: {', '.join(SIGNED_COLORMAPS)})")


def check_fraction(setting: str, value: object, top: float, hint: str,
                   zero_ok: bool = True) -> None:
    """A :class:`ParameterError` unless ``value`` is a number in ``[0, top]`` (``(0, top]``
    when not ``zero_ok``); NaN is refused."""
    number = value if isinstance(value, (int, float, np.floating, np.integer)) \
        and not isinstance(value, bool) else math.nan
    low_ok = number >= 0 if zero_ok else number > 0
    if not (low_ok and number <= top):
        interval = f"[0, {top:g}]" if zero_ok else f"(0, {top:g}]"
        raise ParameterError(f"{setting} must be a number in {interval}, got {value!r}; {hint}")


def scalar_map(raw: torch.Tensor, settings: RenderSettings) -> torch.Tensor:
    """Steps 1–2: raw ``(N, h, w)`` or ``(N, C, h, w)`` -> ``(N, h, w)`` float32."""
    maps = raw.detach().float()
    if maps.ndim == 4:
        maps = reduce_channels(maps, settings.channels)
    return apply_polarity(maps, settings.polarity)


def reduce_channels(maps: torch.Tensor, how: Channels) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, H, W)``."""
    check_choice("channels", how, CHANNELS)
    if how == "max_abs":
        return maps.abs().amax(dim=1)
    if how == "sum_abs":
        return maps.abs().sum(dim=1)
    if how == "sum":
        return maps.sum(dim=1)
    return maps.pow(2).sum(dim=1).sqrt()  # l2


def apply_polarity(maps: torch.Tensor, polarity: Polarity) -> torch.Tensor:
    """Step 2: keep the positive part, the negative part (as positive values), ``|m|``, or
    the signed map, same shape."""
    check_choice("polarity", polarity, POLARITIES)
    if polarity == "positive":
        return maps.clamp(min=0)
    if polarity == "negative":
        return (-maps).clamp(min=0)
    if polarity == "absolute":
        return maps.abs()
    return maps  # signed


def clip_level(maps: torch.Tensor, clip_percentile: float = 100.0) -> torch.Tensor:
    """Step 3, per image: the ``clip_percentile`` percentile of ``|m|``, ``(N,)``."""
    flat = maps.flatten(1).abs()
    if clip_percentile >= 100:
        return flat.amax(dim=1)
    return torch.quantile(flat, clip_percentile / 100.0, dim=1)


def normalise(maps: torch.Tensor, signed: bool, clip_percentile: float = 100.0,
              level: torch.Tensor | None = None) -> torch.Tensor:
    """Step 4, per image: a non-negative map -> [0, 1] by ``m / max m``; a signed map ->
    [-1, 1] by ``m / max |m|``. Zero stays zero (no min-max stretch that would make a flat
    positive map look localised). Values above ``level`` (default: the ``clip_percentile``
    percentile of ``|m|``) are clipped. An all-zero map stays zero."""
    top = (clip_level(maps, clip_percentile) if level is None else level).view(-1, 1, 1)
    unit = (maps / top.clamp(min=1e-12)).clamp(-1 if signed else 0, 1)
    return unit * (top > 0)


def upsample(maps: torch.Tensor, size: tuple[int, int], resampling: Resampling = "bilinear"
             ) -> torch.Tensor:
    """Step 5: ``(N, h, w)`` or ``(N, C, h, w)`` -> the same at ``size = (H, W)``."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    batched = maps if maps.ndim == 4 else maps[:, None]
    options = {} if resampling == "nearest" else {"align_corners": False}
    out = F.interpolate(batched.float(), size=size, mode=resampling, **options)
    if resampling == "bicubic":  # bicubic overshoots; keep the range of the input
        out = out.clamp(float(batched.min()), float(batched.max()))
    return out if maps.ndim == 4 else out[:, 0]


def colourise(unit: torch.Tensor, cmap: str, signed: bool, opacity: float) -> np.ndarray:
    """Step 6: unit maps ``(N, H, W)`` -> RGBA uint8 ``(N, H, W, 4)``.

    Alpha is ``opacity`` for unsigned maps; for signed maps it is ``opacity · |m|``, so that
    the zero of a diverging colormap (white) does not veil the photo.
    """
    values = unit.cpu().numpy()
    position = (values + 1) / 2 if signed else values
    rgba = _lookup_table(cmap)[np.clip((position * 256).astype(np.int32), 0, 255)]
    alpha = float(np.clip(opacity, 0, 1)) * (np.abs(values) if signed else 1.0)
    rgba[..., 3] = np.round(255 * alpha)
    return rgba


@functools.lru_cache(maxsize=32)
def _lookup_table(cmap: str) -> np.ndarray:
    """The colormap's 256 RGBA entries, indexed as matplotlib indexes them
    (``floor(x · 256)``, clipped), so a lookup equals ``colormap(x, bytes=True)``."""
    check_colormap(cmap)
    colormap = matplotlib.colormaps[cmap].resampled(256)
    return colormap(np.arange(256), bytes=True)


def gradient_picture(raw: torch.Tensor, view: GradientView) -> torch.Tensor:
    """Per-channel gradients ``(N, 3, H, W)`` -> pictures ``(N, 3, H, W)`` in [0, 1]."""
    check_choice("gradient_view", view, GRADIENT_VIEWS)
    g = raw.detach().float()
    per_image = (slice(None), None, None, None)
    if view == "colour":
        low = g.flatten(1).amin(1)[per_image]
        high = g.flatten(1).amax(1)[per_image]
        return ((g - low) / (high - low).clamp(min=1e-12)).clamp(0, 1)
    if view == "positive":
        return (g.clamp(min=0) / g.flatten(1).amax(1).clamp(min=1e-12)[per_image]).clamp(0, 1)
    if view == "negative":
        return ((-g).clamp(min=0) / (-g.flatten(1).amin(1)).clamp(min=1e-12)[per_image]
                ).clamp(0, 1)
    # gray: G = Σ_c |g_c|, (G − min G) / (P99(G) − min G), clipped to [0, 1]
    total = g.abs().sum(dim=1)
    low = total.flatten(1).amin(1)[:, None, None]
    high = torch.quantile(total.flatten(1), 0.99, dim=1)[:, None, None]
    gray = ((total - low) / (high - low).clamp(min=1e-12)).clamp(0, 1)
    return gray[:, None].expand(-1, 3, -1, -1)


@dataclass
class Frame:
    """What a view shows for one image: the photo, the heat layer and a caption.

    ``image``: uint8 ``(H, W, 3)``; ``heat``: uint8 ``(H, W, 4)`` (alpha = opacity);
    ``values``: float32 ``(H, W)``, the map after steps 1–2 at display resolution (what a
    pointer hovering over a pixel reads).
    """

    image: np.ndarray
    heat: np.ndarray
    caption: str
    values: np.ndarray

    def composite(self) -> np.ndarray:
        """The heat layer blended over the photo: uint8 ``(H, W, 3)``."""
        alpha = self.heat[..., 3:4].astype(np.float32) / 255.0
        blended = self.heat[..., :3] * alpha + self.image * (1.0 - alpha)
        return np.round(blended).astype(np.uint8)


def render_maps(raw: torch.Tensor, display: np.ndarray, settings: RenderSettings,
                captions: list[str]) -> list[Frame]:
    """Raw maps of a batch + display photos ``(N, H, W, 3)`` -> one :class:`Frame` each."""
    size = (int(display.shape[1]), int(display.shape[2]))
    scalar = scalar_map(raw, settings)
    values = upsample(scalar, size, settings.resampling).cpu().numpy().astype(np.float32)
    if settings.gradient_view is not None and raw.ndim == 4 and raw.shape[1] == 3:
        picture = upsample(gradient_picture(raw, settings.gradient_view), size,
                           settings.resampling)
        rgb = (picture.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        alpha = np.full((*rgb.shape[:3], 1), round(255 * settings.opacity), dtype=np.uint8)
        heat = np.concatenate([rgb, alpha], axis=-1)
    else:  # the clip level of the map itself, applied to its upsampled values
        level = clip_level(scalar, settings.clip_percentile)
        unit = normalise(torch.from_numpy(values), settings.signed, level=level)
        heat = colourise(unit, settings.colormap, settings.signed, settings.opacity)
    return [Frame(display[i], heat[i], captions[i], values[i]) for i in range(len(display))]
