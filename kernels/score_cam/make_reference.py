"""Reference Score-CAM maps of TinyNet, by hand in NumPy (no torch, no xai_widgets).

Run from anywhere: ``python kernels/score_cam/make_reference.py`` rewrites reference.npz next
to this file. For a layer ``A`` of TinyNet and each channel ``k``: ``H_k`` = ``A_k`` upsampled
to 8×8 (bilinear, half-pixel centres: ``reference_nets.np_bilinear``) and min-max normalised;
a constant channel has no mask and weight 0. The weight is the target's softmax probability
of ``x ⊙ H_k`` (the masked pixels at zero: the ``mean`` fill under TinyNet's identity
normalisation), the map ``Σ_k α_k A_k``. Stored for ``features.1`` (4×8×8) and
``features.3`` (6×4×4): ``map:<layer>`` ``(2, h, w)`` and ``weights:<layer>`` ``(2, K)``, and
with the logit as the score ``map:logit:<layer>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402

LAYERS = ("features.1", "features.3")


def main() -> None:
    arrays = rn.random_weights()
    x, targets = arrays["input"], arrays["targets"]
    forward = rn.np_forward(arrays, x)
    for layer in LAYERS:
        activation = forward[layer]
        n, k = activation.shape[:2]
        for score in ("probability", "logit"):
            weights = np.zeros((n, k))
            for i in range(n):
                up = rn.np_bilinear(activation[i], (8, 8))
                for c in range(k):
                    low, high = up[c].min(), up[c].max()
                    if activation[i, c].max() == activation[i, c].min():
                        continue
                    mask = (up[c] - low) / (high - low)
                    logits = rn.np_forward(arrays, x[i:i + 1] * mask)["logits"][0]
                    if score == "probability":
                        e = np.exp(logits - logits.max())
                        weights[i, c] = (e / e.sum())[targets[i]]
                    else:
                        weights[i, c] = logits[targets[i]]
            cam = np.einsum("nk,nkhw->nhw", weights, activation)
            suffix = layer if score == "probability" else f"logit:{layer}"
            arrays[f"map:{suffix}"] = cam
            arrays[f"weights:{suffix}"] = weights
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
