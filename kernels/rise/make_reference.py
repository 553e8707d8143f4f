"""Reference RISE saliency of TinyNet, by hand in NumPy (no torch, no xai_widgets).

Run from anywhere: ``python kernels/rise/make_reference.py`` rewrites reference.npz next to
this file. Masks as in the paper: a binary ``s × s`` grid (``s = 2`` here, cells kept with
probability ``p = 0.5``, drawn by NumPy), upsampled bilinearly (half-pixel centres,
``reference_nets.np_bilinear``) to ``(s + 1) · ⌈8/s⌉ = 12`` pixels and cropped to 8×8 at a
random shift of 0..3 pixels on each axis. Stored: ``grids`` ``(16, 2, 2)``, ``shifts``
``(16, 2)`` (rows, columns), ``masks`` ``(16, 8, 8)`` and, for TinyNet's batch with the masked
pixels at zero (the ``mean`` fill of its identity normalisation) and the softmax probability of
the target,

* ``map`` ``S = 1/(n p) Σ_i softmax(f(x ⊙ M_i))_c M_i``, ``(2, 8, 8)``;
* ``map:logit`` the same with the logit instead of the probability.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402

COUNT, GRID, KEEP, SIZE = 16, 2, 0.5, 8


def main() -> None:
    arrays = rn.random_weights()
    x, targets = arrays["input"], arrays["targets"]
    rng = np.random.default_rng(11)
    cell = int(np.ceil(SIZE / GRID))
    grids = (rng.random((COUNT, GRID, GRID)) < KEEP).astype(np.float64)
    shifts = rng.integers(0, cell, (COUNT, 2))
    big = rn.np_bilinear(grids, ((GRID + 1) * cell, (GRID + 1) * cell))
    masks = np.stack([big[i, dy:dy + SIZE, dx:dx + SIZE]
                      for i, (dy, dx) in enumerate(shifts)])
    probability = np.zeros((len(x), SIZE, SIZE))
    logit = np.zeros_like(probability)
    rows = np.arange(len(x))
    for mask in masks:
        logits = rn.np_forward(arrays, x * mask)["logits"]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = (e / e.sum(axis=1, keepdims=True))[rows, targets]
        probability += p[:, None, None] * mask
        logit += logits[rows, targets][:, None, None] * mask
    arrays.update(grids=grids, shifts=shifts, masks=masks, map=probability / (COUNT * KEEP))
    arrays["map:logit"] = logit / (COUNT * KEEP)
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
