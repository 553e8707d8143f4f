"""Reference guided Grad-CAM of TinyNet, by hand in NumPy (no torch, no xai_widgets).

Run from anywhere: ``python kernels/guided_grad_cam/make_reference.py`` rewrites
reference.npz next to this file. It holds TinyNet's weights, its input batch and targets (see
``kernels/reference_nets.py``) and, at each layer ``features.0 … features.3``,
``map:<layer>`` = ``G ⊙ up(relu(M))``, ``(2, 3, 8, 8)``, where

* ``G`` is guided backprop at the input (NumPy backward with the guided rule),
* ``M = Σ_k mean_ij(∂y_c/∂A_k) A_k`` is the raw Grad-CAM map at the layer (plain NumPy
  backward), and ``up`` is ``reference_nets.np_bilinear`` (half-pixel centres, no corner
  alignment) to 8×8; the 8×8 layers need no resizing.

``grad_cam:<layer>`` stores ``relu(M)`` at the layer's resolution.
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
    guided = rn.np_backward(arrays, x, targets, rule="guided")["input"]
    for layer in LAYERS:
        weights = gradients[layer].mean(axis=(2, 3))
        cam = np.maximum(np.einsum("nk,nkhw->nhw", weights, activations[layer]), 0)
        up = cam if cam.shape[1:] == x.shape[2:] else rn.np_bilinear(cam, x.shape[2:])
        arrays[f"grad_cam:{layer}"] = cam
        arrays[f"map:{layer}"] = guided * up[:, None]
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
