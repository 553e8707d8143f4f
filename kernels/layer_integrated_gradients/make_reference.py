"""Reference layer integrated gradients of TinyNet: 10,000-step Riemann sums in NumPy.

Run from anywhere: ``python kernels/layer_integrated_gradients/make_reference.py`` rewrites
reference.npz next to this file. No torch, no xai_widgets: the explicit NumPy loops of
``kernels/reference_nets.py``. Baseline: zeros (TinyNet's black photo). With ``A`` the
layer's activations, ``m = 10,000`` and the right Riemann sum:

* ``input:<layer>``  path in input space (deliberative explanations):
  ``Σ_k (A(x) − A(x'))_k · (1/m) Σ_t ∂y_c/∂A_k (x' + t/m (x − x'))`` summed over channels;
* ``layer:<layer>``  path in activation space: the same with the gradient taken at
  ``A' + t/m (A − A')`` fed to the rest of the network (computed here by a NumPy head from
  the layer up);
* ``delta`` ``y_c(x) − y_c(x')``.

for ``features.1`` (first ReLU, 4×8×8) and ``features.3`` (second ReLU, 6×4×4). Checks before
writing: the activation path is complete (``Σ = delta`` to 1e-3 of ``Σ |·|``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402

STEPS = 10_000
CHUNK = 1_000
LAYERS = ("features.1", "features.3")


def input_path(a: dict[str, np.ndarray], x: np.ndarray, x0: np.ndarray, targets: np.ndarray,
               layer: str) -> np.ndarray:
    total = np.zeros_like(rn.np_forward(a, x)[layer])
    for start in range(0, STEPS, CHUNK):
        alphas = (np.arange(start, start + CHUNK) + 1) / STEPS
        for i in range(len(x)):
            path = x0[i] + alphas[:, None, None, None] * (x[i] - x0[i])
            total[i] += rn.np_backward(a, path, np.full(CHUNK, targets[i]))[layer].sum(axis=0)
    difference = rn.np_forward(a, x)[layer] - rn.np_forward(a, x0)[layer]
    return difference * total / STEPS


def head_gradient(a: dict[str, np.ndarray], activation: np.ndarray, target: int,
                  layer: str) -> np.ndarray:
    """∂y_c/∂A for activations ``A`` of ``layer`` fed to the rest of TinyNet."""
    weight = a["classifier.weight"][target]
    if layer == "features.3":
        h, w = activation.shape[2:]
        return np.broadcast_to((weight / (h * w))[None, :, None, None], activation.shape)
    z2 = rn.np_conv(activation, a["features.2.weight"], a["features.2.bias"], stride=2)
    h, w = z2.shape[2:]
    g_z2 = (weight / (h * w))[None, :, None, None] * (z2 > 0)
    return rn.np_conv_input_vjp(g_z2, a["features.2.weight"], activation.shape, stride=2)


def activation_path(a: dict[str, np.ndarray], x: np.ndarray, x0: np.ndarray,
                    targets: np.ndarray, layer: str) -> np.ndarray:
    end, start_ = rn.np_forward(a, x)[layer], rn.np_forward(a, x0)[layer]
    total = np.zeros_like(end)
    for start in range(0, STEPS, CHUNK):
        alphas = (np.arange(start, start + CHUNK) + 1) / STEPS
        for i in range(len(x)):
            path = start_[i] + alphas[:, None, None, None] * (end[i] - start_[i])
            total[i] += head_gradient(a, path, int(targets[i]), layer).sum(axis=0)
    return (end - start_) * total / STEPS


def main() -> None:
    arrays = rn.random_weights()
    x, targets = arrays["input"], arrays["targets"]
    x0 = np.zeros_like(x)
    rows = np.arange(len(x))
    delta = (rn.np_forward(arrays, x)["logits"][rows, targets]
             - rn.np_forward(arrays, x0)["logits"][rows, targets])
    arrays["delta"] = delta
    for layer in LAYERS:
        arrays[f"input:{layer}"] = input_path(arrays, x, x0, targets, layer).sum(axis=1)
        ig = activation_path(arrays, x, x0, targets, layer)
        error = np.abs(ig.sum(axis=(1, 2, 3)) - delta) / np.abs(ig).sum(axis=(1, 2, 3))
        assert error.max() < 1e-3, (layer, error)
        arrays[f"layer:{layer}"] = ig.sum(axis=1)
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
