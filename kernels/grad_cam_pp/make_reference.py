"""Reference Grad-CAM++ maps of TinyNet, computed by hand in NumPy (no torch, no xai_widgets).

Run from anywhere: ``python kernels/grad_cam_pp/make_reference.py`` rewrites reference.npz
next to this file. It holds TinyNet's weights, its input batch and targets (see
``kernels/reference_nets.py``) and, at each layer ``features.0 … features.3``:

* ``weights:<layer>``: ``w_k = Σ_ij α_k(i, j) · relu(g_k(i, j))``, ``(2, K)``, with
  ``g = ∂y_c/∂A`` (NumPy backward of ``reference_nets``) and
  ``α = g² / (2 g² + Σ_ab A_k(a, b) · g³)`` (0 where that denominator is 0);
* ``map:<layer>``: the raw map ``Σ_k w_k A_k``, ``(2, h, w)``.

The formula is evaluated element by element with explicit loops (not vectorised), so it
shares no code with the kernel. At ``features.3`` (the pooled layer, constant gradient
``W[c, k] / hw``) the script also checks the closed form
``w_k = relu(W[c, k]) / (2 + W[c, k] · mean(A_k))``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402

LAYERS = ("features.0", "features.1", "features.2", "features.3")


def grad_cam_pp_weights(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``(N, K, h, w)`` activations and gradients -> ``(N, K)`` Grad-CAM++ weights."""
    n, k, h, w = a.shape
    weights = np.zeros((n, k))
    for i in range(n):
        for c in range(k):
            total = a[i, c].sum()
            for y in range(h):
                for x in range(w):
                    grad = g[i, c, y, x]
                    denominator = 2 * grad**2 + total * grad**3
                    alpha = 0.0 if denominator == 0 else grad**2 / denominator
                    weights[i, c] += alpha * max(grad, 0.0)
    return weights


def main() -> None:
    arrays = rn.random_weights()
    x, targets = arrays["input"], arrays["targets"]
    activations = rn.np_forward(arrays, x)
    gradients = rn.np_backward(arrays, x, targets)
    for layer in LAYERS:
        weights = grad_cam_pp_weights(activations[layer], gradients[layer])
        arrays[f"weights:{layer}"] = weights
        arrays[f"map:{layer}"] = np.einsum("nk,nkhw->nhw", weights, activations[layer])
    class_weights = arrays["classifier.weight"][targets]
    closed = np.maximum(class_weights, 0) / (
        2 + class_weights * activations["features.3"].mean(axis=(2, 3)))
    assert np.allclose(arrays["weights:features.3"], closed, rtol=1e-12, atol=1e-14)
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
