"""Reference LayerCAM maps of TinyNet, computed by hand in NumPy (no torch, no xai_widgets).

Run from anywhere: ``python kernels/layer_cam/make_reference.py`` rewrites reference.npz next
to this file. It holds TinyNet's weights, its input batch and targets (see
``kernels/reference_nets.py``) and ``map:<layer>``, the raw LayerCAM map
``Σ_k relu(∂y_c/∂A_k(i, j)) · A_k(i, j)`` at each layer ``features.0 … features.3``,
``(2, h, w)``, from the NumPy backward of ``reference_nets``.
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
        weighted = np.maximum(gradients[layer], 0) * activations[layer]
        arrays[f"map:{layer}"] = weighted.sum(axis=1)
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
