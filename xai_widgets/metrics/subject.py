"""What a metric judges, checked once: a model, its inputs, raw maps and targets.

Every metric takes the same leading arguments: an :class:`~xai_widgets.Explanation` (its
bundle, map, targets and display settings are used) or a model (bundle or ``nn.Module``)
followed by the images and the raw maps. :func:`subject` turns them into a :class:`Subject`,
and :meth:`Subject.pixel_values` reduces a raw map to one value per *input* pixel with the
named steps of :mod:`xai_widgets.render` (channel reduction, polarity, bilinear upsampling).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import MetricError, MetricWarning, ParameterError
from ..explanation import Explanation
from ..models import ModelBundle
from ..render import Channels, Polarity, RenderSettings, scalar_map, upsample
from .forward import default_chunk_size


@dataclass
class Subject:
    """A batch to judge. ``inputs``: float32 ``(N, 3, H, W)``, normalised, on the CPU;
    ``maps``: raw float32 ``(N, h, w)`` or ``(N, C, h, w)``; ``target``: what the caller
    asked for (resolved on the model's logits by the metric); ``display``: how the map is
    read (channel reduction and polarity)."""

    bundle: ModelBundle
    inputs: torch.Tensor
    maps: torch.Tensor
    target: Any
    display: RenderSettings

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the model input."""
        return int(self.inputs.shape[-2]), int(self.inputs.shape[-1])

    def pixel_values(self, polarity: Polarity | None = None) -> torch.Tensor:
        """The map as one value per input pixel, ``(N, H, W)`` float32."""
        return pixel_values(self.maps, self.size, self.display, polarity)


def subject(source: Explanation | ModelBundle | nn.Module, images: Any = None,
            maps: Any = None, target: Any = None, channels: Channels | None = None,
            polarity: Polarity | None = None) -> Subject:
    """Check and gather what a metric needs.

    ``source``: an Explanation (``maps``/``target`` default to its map and targets) or a
    model. ``images``: anything :func:`xai_widgets.images.prepare` accepts (a float tensor
    ``(N, 3, H, W)`` is the normalised model input); an Explanation that carries ``inputs``
    needs none. ``channels``/``polarity`` override how the map is read (default: the
    method's display settings, or :class:`RenderSettings` defaults for a bare tensor).
    """
    if isinstance(source, Explanation):
        bundle = source.bundle
        maps = source.map if maps is None else maps
        target = source.targets if target is None else target
        display = source.method.display
        if images is None:
            images = getattr(source, "inputs", None)
        if images is None:
            raise MetricError("this metric runs the model on the images again, and an "
                              "Explanation does not keep its model input: pass the same "
                              "images, e.g. metric(explanation, images)")
    else:
        bundle = ModelBundle.wrap(source)
        display = RenderSettings()
        if images is None or maps is None:
            raise MetricError("give the images and their raw maps: metric(model, images, maps)"
                              " (or pass an Explanation and the images)")
    if channels is not None or polarity is not None:
        display = display.updated(**{k: v for k, v in (("channels", channels),
                                                       ("polarity", polarity)) if v})
    inputs = bundle.prepare(images).inputs
    return Subject(bundle, inputs, check_maps(maps, len(inputs), _hw(inputs)), target, display)


def check_maps(maps: Any, count: int, size: tuple[int, int] | None) -> torch.Tensor:
    """Raw maps as float32 ``(N, h, w)`` or ``(N, C, h, w)``; a :class:`MetricError` that
    says what is wrong otherwise. ``size`` is the input's ``(H, W)``: a map is at most that
    large, and some stride ``s`` gives both its sides (``h`` within 1 of ``H / s``, ``w``
    within 1 of ``W / s``), as a network's downsampling does."""
    if isinstance(maps, np.ndarray):
        maps = torch.from_numpy(np.asarray(maps, dtype=np.float32))
    if not isinstance(maps, torch.Tensor):
        raise MetricError(f"a map is a tensor or an array, not {type(maps).__name__}")
    maps = maps.detach().float().cpu()
    if maps.ndim == 2 and count == 1:
        maps = maps[None]
    if maps.ndim not in (3, 4) or maps.shape[0] != count:
        raise MetricError(f"the maps have shape {tuple(maps.shape)}; expected (N, h, w) or "
                          f"(N, C, h, w) with N = {count}, one map per image")
    if not torch.isfinite(maps).all():
        raise MetricError("the map contains NaN or infinite values")
    if size is not None:
        height, width = size
        h, w = int(maps.shape[-2]), int(maps.shape[-1])
        if h > height or w > width or not _one_stride(h, height, w, width):
            raise MetricError(
                f"a {h}×{w} map does not fit a {height}×{width} input: a map is at most the "
                "input's size and has its aspect ratio (it is upsampled to the input); was it "
                "computed for another image size?")
    return maps


def pixel_values(maps: torch.Tensor, size: tuple[int, int], display: RenderSettings,
                 polarity: Polarity | None = None) -> torch.Tensor:
    """Raw maps -> ``(N, H, W)`` at the input size: channels reduced as ``display`` says,
    then ``polarity`` (default: the display's), then bilinear upsampling."""
    settings = display if polarity is None else display.updated(polarity=polarity)
    return upsample(scalar_map(maps, settings), size, "bilinear")


def warn_if_constant(values: torch.Tensor, consequence: str) -> None:
    """A :class:`~xai_widgets.errors.MetricWarning` naming the images whose map ``values``
    ``(N, ...)`` is constant (all zero, typically), whose pixels then tie: ``consequence``
    says what the metric does with the tie."""
    flat = values.flatten(1)
    constant = (flat.amax(dim=1) == flat.amin(dim=1)).nonzero().flatten().tolist()
    if constant:
        which = "the map is" if len(values) == 1 else f"the maps of images {constant} are"
        warnings.warn(f"{which} constant (value {float(flat[constant[0], 0]):g}): {consequence}; "
                      "the result says nothing about the method", MetricWarning, stacklevel=3)


def ranking_polarity(display: RenderSettings) -> Polarity:
    """The polarity that orders pixels as the display does, ties broken by raw values.

    ``positive`` (a ReLU) ranks as ``signed``: same order over the positive pixels, and the
    pixels the ReLU ties at zero keep the order of their raw values.
    """
    return "signed" if display.polarity == "positive" else display.polarity


def check_chunk_size(chunk_size: int | None, device: torch.device) -> int:
    """Inputs per forward pass: ``chunk_size`` checked, or for ``None`` the default of
    ``device`` (:func:`.forward.default_chunk_size`)."""
    if chunk_size is None:
        return default_chunk_size(device)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ParameterError(f"chunk_size must be a positive integer (inputs per forward "
                             f"pass), got {chunk_size!r}")
    return chunk_size


def _hw(inputs: torch.Tensor) -> tuple[int, int]:
    return int(inputs.shape[-2]), int(inputs.shape[-1])


def _one_stride(h: int, height: int, w: int, width: int) -> bool:
    """Is there a stride ``s`` with ``|height / s − h| < 1`` and ``|width / s − w| < 1``?"""
    low = max(height / (h + 1), width / (w + 1))
    high = min(height / (h - 1) if h > 1 else float("inf"),
               width / (w - 1) if w > 1 else float("inf"))
    return low < high
