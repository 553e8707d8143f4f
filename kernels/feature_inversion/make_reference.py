"""Reference guided feature inversion on TinyNet, by hand in NumPy float64 (no torch).

Run from anywhere: ``python kernels/feature_inversion/make_reference.py`` rewrites
reference.npz next to this file. Everything the method does is re-derived here: the
border-renormalised Gaussian blur, the bilinear (corners aligned) upsampling as a matrix, both
mask normalisers with their (sub)gradients, TinyNet's forward and its vector-Jacobian
products (``kernels/reference_nets.py``), the softmax terms, Adam and its step schedule, and
the projection of ``w`` onto ``[0, 1e5]``. For each normaliser it stores, after
``ITERATIONS`` steps (``STEP1`` of them step 1) at layer ``features.3``:
``<normaliser>:mask`` ``(2, 8, 8)``, ``<normaliser>:w`` ``(2, 6)``, ``<normaliser>:loss``
``(2, ITERATIONS)`` and ``<normaliser>:probabilities`` ``(2, 3)`` (target probability of the
image, the kept and the removed blend), plus ``blurred`` ``(2, 3, 8, 8)``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402

ITERATIONS, STEP1 = 8, 4
SETTINGS = {"lr": 0.05, "lr_decay": 0.5, "decay_every": 3, "sparsity_step1": 0.1,
            "removal_weight": 1.0, "sparsity_step2": 0.1, "init_weight": 0.1,
            "blur_sigma": 2.0}


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur, kernel cut at the borders and renormalised, pixel by pixel."""
    _, _, h, w = x.shape
    radius = min(math.ceil(3 * sigma), max(h, w))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            total, weight = 0.0, 0.0
            for di in range(-radius, radius + 1):
                for dj in range(-radius, radius + 1):
                    if 0 <= i + di < h and 0 <= j + dj < w:
                        kk = k[di + radius] * k[dj + radius]
                        total = total + kk * x[:, :, i + di, j + dj]
                        weight += kk
            out[:, :, i, j] = total / weight
    return out


def upsampling_matrix(small: int, large: int) -> np.ndarray:
    """``(large, small)``: bilinear interpolation with aligned corners."""
    p = np.zeros((large, small))
    for i in range(large):
        src = i * (small - 1) / (large - 1)
        low = min(int(np.floor(src)), small - 1)
        high = min(low + 1, small - 1)
        p[i, low] += 1 - (src - low)
        p[i, high] += src - low
    return p


def normalise(u: np.ndarray, kind: str) -> tuple[np.ndarray, object]:
    """Mask of one image ``(H, W)`` and a function mapping dL/dm to dL/du."""
    a, b = np.unravel_index(u.argmin(), u.shape), np.unravel_index(u.argmax(), u.shape)
    low, high = u[a], u[b]
    scale = high if kind == "official" else high - low
    m = (u - low) / scale
    assert m.min() >= -1e-12 and m.max() <= 1 + 1e-12, "the reference assumes no clipping"

    def back(g: np.ndarray) -> np.ndarray:
        du = g / scale
        du[a] -= g.sum() / scale
        if kind == "official":
            du[b] -= (g * (u - low)).sum() / scale ** 2
        else:
            du[a] += (g * (u - low)).sum() / scale ** 2
            du[b] -= (g * (u - low)).sum() / scale ** 2
        return du

    return m, back


def input_vjp(a: dict[str, np.ndarray], x: np.ndarray, g3: np.ndarray) -> np.ndarray:
    """dL/dx from dL/d features.3 through TinyNet's convolutions and ReLUs."""
    f = rn.np_forward(a, x)
    g_z2 = rn.np_rectifier_vjp(g3, f["features.2"], "gradient")
    g_r1 = rn.np_conv_input_vjp(g_z2, a["features.2.weight"], f["features.1"].shape, stride=2)
    g_z1 = rn.np_rectifier_vjp(g_r1, f["features.0"], "gradient")
    return rn.np_conv_input_vjp(g_z1, a["features.0.weight"], x.shape)


def logits_vjp(a: dict[str, np.ndarray], x: np.ndarray, g: np.ndarray) -> np.ndarray:
    h, w = rn.np_forward(a, x)["features.3"].shape[2:]
    g3 = np.broadcast_to((g @ a["classifier.weight"] / (h * w))[:, :, None, None],
                         (x.shape[0], 6, h, w)).copy()
    return input_vjp(a, x, g3)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def run(a: dict[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
    s = SETTINGS
    x, targets = a["input"], a["targets"]
    n, rows = x.shape[0], np.arange(x.shape[0])
    p = blur(x, s["blur_sigma"])
    basis = rn.np_forward(a, x)["features.3"]
    reference_norm = (basis ** 2).sum(axis=(1, 2, 3))
    ph, pw = upsampling_matrix(basis.shape[2], 8), upsampling_matrix(basis.shape[3], 8)
    w = np.full(basis.shape[:2], s["init_weight"])
    m1, v1 = np.zeros_like(w), np.zeros_like(w)
    losses = np.zeros((n, ITERATIONS))

    def masks(w: np.ndarray) -> tuple[np.ndarray, list]:
        out, backs = [], []
        for i in range(n):
            u = ph @ np.einsum("k,khw->hw", w[i], basis[i]) @ pw.T
            m, back = normalise(u, kind)
            out.append(m)
            backs.append(back)
        return np.stack(out), backs

    for it in range(ITERATIONS):
        m, backs = masks(w)
        kept = x * m[:, None] + p * (1 - m[:, None])
        removed = x * (1 - m[:, None]) + p * m[:, None]
        if it < STEP1:
            diff = rn.np_forward(a, kept)["features.3"] - basis
            loss = (diff ** 2).sum(axis=(1, 2, 3)) / reference_norm + \
                s["sparsity_step1"] * (w ** 2).sum(1)
            g_kept = input_vjp(a, kept, 2 * diff / reference_norm[:, None, None, None])
            g_removed = np.zeros_like(x)
            reg = s["sparsity_step1"]
        else:
            pk = softmax(rn.np_forward(a, kept)["logits"])
            pr = softmax(rn.np_forward(a, removed)["logits"])
            loss = -pk[rows, targets] + s["removal_weight"] * pr[rows, targets] + \
                s["sparsity_step2"] * (w ** 2).sum(1)
            onehot = np.eye(pk.shape[1])[targets]
            g_kept = logits_vjp(a, kept, -pk[rows, targets][:, None] * (onehot - pk))
            g_removed = logits_vjp(a, removed, s["removal_weight"] * pr[rows, targets][:, None]
                                   * (onehot - pr))
            reg = s["sparsity_step2"]
        losses[:, it] = loss
        g_mask = (g_kept * (x - p) + g_removed * (p - x)).sum(1)
        grad = np.zeros_like(w)
        for i in range(n):
            g_small = ph.T @ backs[i](g_mask[i]) @ pw
            grad[i] = np.einsum("khw,hw->k", basis[i], g_small)
        grad += 2 * reg * w
        lr = s["lr"] * s["lr_decay"] ** (it // s["decay_every"])
        m1 = 0.9 * m1 + 0.1 * grad
        v1 = 0.999 * v1 + 0.001 * grad ** 2
        step = it + 1
        denom = np.sqrt(v1) / math.sqrt(1 - 0.999 ** step) + 1e-8
        w = np.clip(w - lr / (1 - 0.9 ** step) * m1 / denom, 0, 1e5)

    m, _ = masks(w)
    kept = x * m[:, None] + p * (1 - m[:, None])
    removed = x * (1 - m[:, None]) + p * m[:, None]
    probabilities = np.stack([softmax(rn.np_forward(a, v)["logits"])[rows, targets]
                              for v in (x, kept, removed)], 1)
    return {f"{kind}:mask": m, f"{kind}:w": w, f"{kind}:loss": losses,
            f"{kind}:probabilities": probabilities, "blurred": p}


def main() -> None:
    arrays = rn.random_weights()
    for kind in ("official", "minmax"):
        arrays.update(run(arrays, kind))
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
