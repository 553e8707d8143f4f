"""The one Gaussian blur of the package: baselines, backgrounds and substrates of a batch.

Integrated gradients' blurred baseline, feature inversion's background and the insertion
metric's substrate all blur a normalised batch ``(N, C, H, W)``; they differ only in how the
image continues past its border:

``"replicate"``    the edge pixels repeat;
``"reflect"``      the image is mirrored at its edge (the edge pixel not repeated), falling
                   back to ``"replicate"`` on an image smaller than the kernel's radius;
``"renormalise"``  zeros outside, divided by the blur of an all-ones image: the kernel is cut
                   at the border and its remaining weights sum to one, so a constant image
                   stays constant and blurring commutes with the input normalisation.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Border = Literal["replicate", "reflect", "renormalise"]


def gaussian_blur(images: torch.Tensor, sigma: float, radius: int | None = None,
                  border: Border = "replicate") -> torch.Tensor:
    """Separable, per-channel Gaussian blur of ``(N, C, H, W)`` with standard deviation
    ``sigma`` pixels and a kernel of ``2·radius + 1`` taps (default radius ``⌈3σ⌉``);
    ``sigma <= 0`` returns a copy."""
    if sigma <= 0:
        return images.clone()
    height, width = images.shape[-2:]
    if radius is None:
        radius = max(1, math.ceil(3 * sigma))
    if border == "renormalise":
        radius = min(radius, max(height, width))  # wider taps would only meet zeros
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()

    def along(x: torch.Tensor, axis: int) -> torch.Tensor:
        channels = x.shape[1]
        shape = (channels, 1, 1, -1) if axis == 3 else (channels, 1, -1, 1)
        pad = (radius, radius, 0, 0) if axis == 3 else (0, 0, radius, radius)
        if border == "renormalise":
            return F.conv2d(x, kernel.view(shape[1:]).expand(shape), groups=channels,
                            padding=(0, radius) if axis == 3 else (radius, 0))
        mode = "reflect" if border == "reflect" and x.shape[axis] > radius else "replicate"
        return F.conv2d(F.pad(x, pad, mode=mode), kernel.view(shape[1:]).expand(shape),
                        groups=channels)

    blurred = along(along(images, 3), 2)
    if border == "renormalise":
        ones = torch.ones(1, 1, height, width, dtype=images.dtype, device=images.device)
        blurred = blurred / along(along(ones, 3), 2)
    return blurred
