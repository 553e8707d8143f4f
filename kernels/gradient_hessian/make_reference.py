"""Reference gradient–Hessian ("2ndG") maps of TinyNet: NumPy, Hessian by finite differences.

Run from anywhere: ``python kernels/gradient_hessian/make_reference.py`` rewrites
reference.npz next to this file. No torch, no xai_widgets. For a layer ``A`` of TinyNet, a
NumPy head computes the logits from ``A`` (``features.1``: conv 4→6 stride 2, ReLU, global
average pool, linear; ``features.3``: average pool, linear) and the score ``s`` of the target
class ``c``: ``sigmoid`` ``σ(z_c)``, ``probability`` ``softmax(z)_c``, ``logit`` ``z_c``.

* ``first:<score>:<layer>``   ``Σ_k A_k [∂s/∂A_k]_+``, the gradient by the chain rule through
  the explicit NumPy backward of ``reference_nets`` (one backward per class);
* ``second:<score>:<layer>``  ``½ |a_ijᵀ H_ij a_ij|`` by central second differences of ``s``
  along ``a_ij`` (the cell's channel vector, all other cells fixed): ``(s(A + h u) − 2 s(A) +
  s(A − h u)) / h²`` with ``u`` = ``A`` restricted to the cell, ``h = 1e-3`` (checked against
  ``h = 5e-4``: the head is piecewise linear and no ReLU switches within the steps; for
  ``logit`` they are rounding noise below 1e-6 and 0 is stored);
* ``map:<score>:<layer>``     their sum, each ``(2, h, w)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402

LAYERS = ("features.1", "features.3")
SCORES = ("sigmoid", "probability", "logit")


def head_logits(a: dict[str, np.ndarray], activation: np.ndarray, layer: str) -> np.ndarray:
    if layer == "features.1":
        activation = np.maximum(
            rn.np_conv(activation, a["features.2.weight"], a["features.2.bias"], stride=2), 0)
    return activation.mean(axis=(2, 3)) @ a["classifier.weight"].T + a["classifier.bias"]


def score(logits: np.ndarray, targets: np.ndarray, how: str) -> np.ndarray:
    rows = np.arange(len(targets))
    z = logits[rows, targets]
    if how == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if how == "probability":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True))[rows, targets]
    return z


def score_gradient(a: dict[str, np.ndarray], x: np.ndarray, targets: np.ndarray, layer: str,
                   how: str) -> np.ndarray:
    """∂s/∂A by the chain rule: Σ_c' ∂s/∂z_c' · ∂z_c'/∂A."""
    logits = rn.np_forward(a, x)["logits"]
    classes = logits.shape[1]
    per_class = np.stack([rn.np_backward(a, x, np.full(len(x), c))[layer]
                          for c in range(classes)], axis=1)  # (N, C, K, h, w)
    rows = np.arange(len(x))
    z = logits[rows, targets]
    weights = np.zeros_like(logits)
    if how == "sigmoid":
        sig = 1 / (1 + np.exp(-z))
        weights[rows, targets] = sig * (1 - sig)
    elif how == "probability":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        weights = -p[rows, targets][:, None] * p
        weights[rows, targets] += p[rows, targets]
    else:
        weights[rows, targets] = 1.0
    return np.einsum("nc,nckhw->nkhw", weights, per_class)


def second_differences(a: dict[str, np.ndarray], activation: np.ndarray, targets: np.ndarray,
                       layer: str, how: str, step: float) -> np.ndarray:
    n, _k, h, w = activation.shape
    centre = score(head_logits(a, activation, layer), targets, how)
    out = np.zeros((n, h, w))
    for i in range(h):
        for j in range(w):
            u = np.zeros_like(activation)
            u[:, :, i, j] = activation[:, :, i, j]
            up = score(head_logits(a, activation + step * u, layer), targets, how)
            down = score(head_logits(a, activation - step * u, layer), targets, how)
            out[:, i, j] = (up - 2 * centre + down) / step ** 2
    return out


def main() -> None:
    arrays = rn.random_weights()
    x, targets = arrays["input"], arrays["targets"]
    forward = rn.np_forward(arrays, x)
    for layer in LAYERS:
        activation = forward[layer]
        assert np.allclose(head_logits(arrays, activation, layer), forward["logits"])
        for how in SCORES:
            grad = score_gradient(arrays, x, targets, layer, how)
            first = (activation * np.maximum(grad, 0)).sum(axis=1)
            quadratic = second_differences(arrays, activation, targets, layer, how, 1e-3)
            check = second_differences(arrays, activation, targets, layer, how, 5e-4)
            assert np.allclose(quadratic, check, rtol=1e-4, atol=1e-7), (layer, how)
            if how == "logit":  # piecewise linear: the differences are rounding noise
                assert np.abs(quadratic).max() < 1e-6
                quadratic = np.zeros_like(quadratic)
            second = 0.5 * np.abs(quadratic)
            arrays[f"first:{how}:{layer}"] = first
            arrays[f"second:{how}:{layer}"] = second
            arrays[f"map:{how}:{layer}"] = first + second
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
