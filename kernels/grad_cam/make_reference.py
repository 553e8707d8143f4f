"""Reference Grad-CAM maps of TinyNet, computed by hand in NumPy (no torch, no xai_widgets).

Run from anywhere: ``python kernels/grad_cam/make_reference.py`` rewrites reference.npz next
to this file. It holds TinyNet's weights, its input batch and targets (see
``kernels/reference_nets.py``) and ``map:<layer>``, the raw (un-rectified) Grad-CAM map
``Σ_k mean_ij(∂y_c/∂A_k) A_k`` at each layer, ``(2, h, w)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402

LAYERS = ("features.0", "features.1", "features.2", "features.3")


def main() -> None:
    arrays = rn.random_weights()
    x, targets = arrays["input"], arrays["targets"]
    activations = rn.np_forward(arrays, x)
    gradients = rn.np_backward(arrays, x, targets)
    for layer in LAYERS:
        weights = gradients[layer].mean(axis=(2, 3))
        arrays[f"map:{layer}"] = np.einsum("nk,nkhw->nhw", weights, activations[layer])
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
