"""Exercises of ``07_layerwise_inverse``: the kept fraction, PSNR, frequency bands."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..explanation import Explanation
from ..kernels.layerwise_inverse import frequency_bands
from ._common import compare, tensor
from .core import EXERCISES, Verdict, exercise

NOTEBOOK = "07_layerwise_inverse"
HIGH = slice(32, 64)  # the upper half of the 64 zig-zag bands of an 8×8 DCT


@exercise("li.attribution", NOTEBOOK, "the fraction of the input the inverse keeps",
          answer="h", given=("explanation", "inputs"), solution="""
    h = (inverse.extras["inverse"].abs() / (examples.abs() + 1e-6)).sum(dim=1)   # Σ_c |x̂_c| / |x_c|
""")
def _attribution(answer: Any, *, explanation: Explanation, inputs: Any) -> Verdict:
    reference = explanation.map.double()
    inverse = explanation.extras["inverse"].double()
    x = tensor(inputs, "inputs").reshape(inverse.shape)
    return compare(
        EXERCISES["li.attribution"], answer, reference, "h", tolerance=1e-4,
        source="the toolkit's map",
        right="h(p) = Σ_c |x̂_c(p)| / (|x_c(p)| + 1e-6): the toolkit's map; 0 where the "
              "inverse drops a pixel, 3 where it keeps all of it",
        mistakes=(((inverse.abs() / (x.abs() + 1e-6)).mean(1),
                   "the mean over channels is h / 3: the paper sums them"),),
        shape_hint="one value per pixel: sum over the colour channels",
        hint="divide |x̂| by |x| pixel by pixel, then add the three colours")


@exercise("li.psnr", NOTEBOOK, "PSNR of an upscaled picture", answer="psnr",
          given=("estimate", "truth"), solution="""
    mse = (low - camera).pow(2).mean()
    psnr = float(10 * torch.log10(1 / mse))      # pictures in [0, 1]: the peak is 1
""")
def _psnr(answer: Any, *, estimate: Any, truth: Any) -> Verdict:
    task = EXERCISES["li.psnr"]
    value = float(answer)
    a, b = tensor(estimate, "estimate"), tensor(truth, "truth")
    mse = float((a - b).pow(2).mean())
    reference = 10 * math.log10(1 / mse)
    if abs(value - reference) < 1e-2:
        return task.right(f"PSNR = 10 log10(1 / MSE) = {reference:.2f} dB for pictures in "
                          "[0, 1]; +6 dB halves the error's amplitude")
    if abs(value - 10 * math.log10(255 ** 2 / mse)) < 1e-2:
        return task.wrong("the pictures here are in [0, 1], so the peak is 1, not 255")
    mixed = (20 * math.log10(1 / mse), 10 * math.log10(1 / math.sqrt(mse)))
    if any(abs(value - v) < 1e-2 for v in mixed):
        return task.wrong("mix-up of power and amplitude: 10 log10(peak² / MSE), or "
                          "20 log10(peak / RMSE)")
    return task.wrong(f"PSNR = 10 log10(peak² / MSE) with the mean of the squared differences "
                      f"(not {value:.2f} dB)")


@exercise("li.bands", NOTEBOOK, "do the focused patches hold more high frequencies?",
          answer="focused_higher", given=("image", "attribution"), solution="""
    focused_higher = bool(bands.focused[32:].mean() > bands.unfocused[32:].mean())
""")
def _bands(answer: Any, *, image: Any, attribution: Any) -> Verdict:
    task = EXERCISES["li.bands"]
    if not isinstance(answer, bool):
        return task.wrong("answer True or False")
    bands = frequency_bands(torch.as_tensor(image), torch.as_tensor(attribution))
    focused, unfocused = float(bands.focused[HIGH].mean()), float(bands.unfocused[HIGH].mean())
    truth = focused > unfocused
    story = (f"mean |DCT coefficient| over bands 32–63: focused {focused:.4f}, unfocused "
             f"{unfocused:.4f} ({bands.focused_patches} of {bands.patches} patches focused)")
    if answer == truth:
        return task.right(story + (": the network draws on the detailed patches, where there "
                                   "is something to sharpen" if truth else
                                   ": here the inverse leans on the smooth patches"))
    return task.wrong(story)
