"""RISE: randomized input sampling for explanation (Petsiuk, Das, Saenko, BMVC 2018).

``n`` random masks ``M_i`` in [0, 1]: a binary ``s × s`` grid whose cells are kept with
probability ``p``, upsampled bilinearly to ``(s + 1)`` cells of ``⌈H/s⌉ × ⌈W/s⌉`` pixels and
cropped at a random shift of up to one cell (so mask edges fall anywhere). With the target's
score ``f_c`` (softmax probability by default, as the authors' code) of the masked image
``x ⊙ M + x_fill ⊙ (1 − M)``:

    S_c = 1 / (n · p) · Σ_i f_c(x ⊙ M_i + x_fill ⊙ (1 − M_i)) · M_i

Shape ``(N, H, W)`` at the model input's resolution, raw (≥ 0 for probabilities). The masked
region is filled with ``mean`` (zero input, as the authors' code multiplies the normalised
image), ``black``, ``blurred`` or ``uniform`` noise.

Mask ``i`` is drawn from its own local generator, seeded with ``(seed, i)`` on the CPU (the
same grids on any device), when its chunk comes: the result depends on neither the chunk
size nor the batch (every image sees the same masks), and memory is bounded by the chunk
whatever the number of masks (a ``chunk_size`` whose masked inputs cannot fit is refused with
the size that does). The forwards run under ``torch.inference_mode()`` in eval mode;
progress is reported after every chunk (with the partial map as a preview).

Petsiuk, Das, Saenko. "RISE: Randomized Input Sampling for Explanation of Black-box Models."
BMVC 2018. arXiv:1806.07421.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ParameterError
from ..render import RenderSettings
from ._iterative import (
    BASELINES,
    SCORES,
    baseline,
    chunk_rows,
    chunks,
    inference,
    logits_of,
    model_input,
    out_of_memory_as_parameter_error,
    target_score,
)
from .spec import KernelContext, KernelResult, MethodSpec, Param

NAME = "rise"


class Masks:
    """The RISE masks of one seed for inputs of ``size = (H, W)``, made a chunk at a time."""

    def __init__(self, grid: int, keep: float, size: tuple[int, int], seed: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        height, width = size
        self.size, self.grid, self.keep, self.seed = size, grid, keep, seed
        self.device, self.dtype = device, dtype
        self.cell = (math.ceil(height / grid), math.ceil(width / grid))

    def draw(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Binary grids ``(c, s, s)`` and shifts ``(c,)``, ``(c,)`` of masks ``start:stop``:
        mask ``i`` from a CPU generator seeded with ``seed · 1 000 003 + i`` (``i < 10⁶``, so
        no two (seed, mask) pairs share a seed)."""
        cells = self.grid * self.grid
        uniform = torch.stack([
            torch.rand(cells + 2, generator=torch.Generator().manual_seed(
                self.seed * 1_000_003 + i)) for i in range(start, stop)])
        grids = (uniform[:, :cells] < self.keep).view(-1, self.grid, self.grid)
        shift_y = (uniform[:, cells] * self.cell[0]).long()
        shift_x = (uniform[:, cells + 1] * self.cell[1]).long()
        return grids, shift_y, shift_x

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        """Masks ``start:stop``, ``(stop − start, H, W)``."""
        grids, shift_y, shift_x = self.draw(start, stop)
        up = ((self.grid + 1) * self.cell[0], (self.grid + 1) * self.cell[1])
        big = F.interpolate(grids[:, None].to(self.device, self.dtype), size=up,
                            mode="bilinear", align_corners=False)[:, 0]
        height, width = self.size
        shifts = zip(shift_y.tolist(), shift_x.tolist(), strict=True)
        return torch.stack([big[i, dy:dy + height, dx:dx + width]
                            for i, (dy, dx) in enumerate(shifts)])

    def bytes_per_mask(self) -> int:
        """Memory of one mask while it is made: the upsampled grid and its crop."""
        up = (self.grid + 1) ** 2 * self.cell[0] * self.cell[1]
        return (up + self.size[0] * self.size[1]) * torch.finfo(self.dtype).bits // 8


def compute(ctx: KernelContext) -> KernelResult:
    p = ctx.params
    bundle = ctx.traces.bundle
    x = model_input(bundle, ctx.traces.inputs)
    images, _, height, width = x.shape
    fill = baseline(p["fill"], x, bundle.preprocessing, method=NAME, seed=p["seed"])
    count, keep = int(p["n_masks"]), float(p["keep_probability"])
    if keep <= 0:
        raise ParameterError(f"{NAME}: keep_probability must be positive (a mask must keep "
                             "something), got 0; the paper uses 0.5")
    masks = Masks(int(p["grid_size"]), keep, (height, width), int(p["seed"]), x.device,
                  x.dtype)
    # one row per (mask, image): the masked input, and its share of the mask
    per_row = x[0].numel() * x.element_size() + masks.bytes_per_mask() // images
    rows = chunk_rows(p["chunk_size"], count * images, per_row, x.device, NAME)
    per_chunk = max(1, rows // images)
    targets = ctx.target_index.repeat(per_chunk)
    saliency = torch.zeros(images, height * width, dtype=torch.float32, device=x.device)
    difference = x - fill
    with out_of_memory_as_parameter_error(per_chunk * images, x.device, NAME), \
            inference(bundle):
        for start, stop in chunks(count, per_chunk):
            m = masks(start, stop)  # (c, H, W)
            batch = torch.addcmul(fill[None], m[:, None, None], difference[None]).flatten(0, 1)
            scores = target_score(logits_of(bundle, batch), targets[:len(batch)], p["score"])
            del batch
            # Σ_i f(x ⊙ M_i) M_i per image: (images × c) @ (c × pixels)
            saliency.addmm_(scores.view(-1, images).T.float(), m.flatten(1).float())
            ctx.report(stop / count, None if ctx.progress is None else
                       (saliency / (stop * keep)).view(images, height, width))
    return KernelResult((saliency / (count * keep)).view(images, height, width).float())


SPEC = MethodSpec(
    name=NAME,
    label="RISE",
    family="perturbation",
    layer_policy="none",
    cost="iterative",
    paper="Petsiuk et al. RISE: Randomized Input Sampling for Explanation of Black-box "
          "Models. BMVC 2018",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(polarity="positive"),
    params=(
        Param("n_masks", 4000, int, "number of random masks (forward passes per image)",
              low=1, high=1_000_000),
        Param("grid_size", 7, int, "cells per side of the random grid (cell size ⌈H/s⌉ px)",
              low=1, high=256),
        Param("keep_probability", 0.5, float, "probability that a cell is kept (> 0)",
              low=0.0, high=1.0),
        Param("fill", "mean", str, "what replaces the masked pixels", choices=BASELINES),
        Param("score", "probability", str, "the target's softmax probability or its logit",
              choices=SCORES),
        Param("seed", 0, int, "seed of the masks", low=0, high=2**31 - 1),
        Param("chunk_size", 8, int, "masked images per forward pass (memory bound; 8 is "
              "fastest on a CPU, larger on a GPU)", low=1,
              high=100_000),
    ),
    needs_gradient=False,
    summary="Random masks weighted by the class probability of the masked image: "
            "a black-box map.",
)
