"""Reference inverted representations on TinyNet, by hand in NumPy float64.

Run from anywhere: ``python kernels/inverted_representation/make_reference.py`` rewrites
reference.npz next to this file. The optimisation is re-derived here: TinyNet's forward and
its vector-Jacobian product from ``features.1`` to the input (``kernels/reference_nets.py``),
the normalised feature loss, the α-norm and total-variation priors and their gradients, SGD
with momentum as torch defines it (``b ← μ b + g``, ``x ← x − lr · b``), the step schedule
(÷10 after steps 0, k, 2k, ...) and the projection onto the pixel range [0, 1] (TinyNet's
tests use the identity normalisation). Only the initial image comes from torch, whose seeded
generator is part of the method's contract (``init_scale · N(0, 1)``, CPU generator).
For each case: ``<case>:image`` ``(2, 3, 8, 8)`` and ``<case>:loss`` ``(2, ITERATIONS)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402

ITERATIONS = 10
CASES = {
    "clipped": {"lr": 2.0, "lr_decay": 0.1, "decay_every": 4, "momentum": 0.9,
                "feature_weight": 0.1, "alpha": 6.0, "alpha_weight": 1e-2, "tv_beta": 2.0,
                "tv_weight": 1e-2, "init_scale": 0.1, "seed": 3, "clip_to_image": True},
    "free": {"lr": 0.5, "lr_decay": 0.5, "decay_every": 3, "momentum": 0.5,
             "feature_weight": 1.0, "alpha": 3.0, "alpha_weight": 1e-3, "tv_beta": 1.5,
             "tv_weight": 1e-2, "init_scale": 0.5, "seed": 7, "clip_to_image": False},
}


def initial(shape: tuple[int, ...], scale: float, seed: int) -> np.ndarray:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(shape, generator=generator).double().numpy()


def features_and_vjp(a: dict[str, np.ndarray], x: np.ndarray, g: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    f = rn.np_forward(a, x)
    if g is None:
        return f["features.1"], None
    g_z1 = rn.np_rectifier_vjp(g, f["features.0"], "gradient")
    return f["features.1"], rn.np_conv_input_vjp(g_z1, a["features.0.weight"], x.shape)


def total_variation(x: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-image value and gradient over the (H-1) x (W-1) grid."""
    value = np.zeros(x.shape[0])
    grad = np.zeros_like(x)
    h, w = x.shape[2:]
    for i in range(h - 1):
        for j in range(w - 1):
            down = x[:, :, i + 1, j] - x[:, :, i, j]
            right = x[:, :, i, j + 1] - x[:, :, i, j]
            s = down ** 2 + right ** 2 + (0.0 if beta == 2 else 1e-12)
            value += (s ** (beta / 2)).sum(1)
            ds = beta / 2 * s ** (beta / 2 - 1)
            grad[:, :, i + 1, j] += ds * 2 * down
            grad[:, :, i, j + 1] += ds * 2 * right
            grad[:, :, i, j] -= ds * 2 * (down + right)
    return value, grad


def run(a: dict[str, np.ndarray], s: dict) -> tuple[np.ndarray, np.ndarray]:
    target, _ = features_and_vjp(a, a["input"])
    norm = (target ** 2).sum(axis=(1, 2, 3))
    x = initial(a["input"].shape, s["init_scale"], s["seed"])
    buffer = np.zeros_like(x)
    losses = np.zeros((x.shape[0], ITERATIONS))
    lr = s["lr"]
    for it in range(ITERATIONS):
        phi, _ = features_and_vjp(a, x)
        diff = phi - target
        _, g_feature = features_and_vjp(a, x, 2 * s["feature_weight"] * diff
                                        / norm[:, None, None, None])
        tv, g_tv = total_variation(x, s["tv_beta"])
        alpha = (np.abs(x) ** s["alpha"]).sum(axis=(1, 2, 3))
        g_alpha = s["alpha"] * np.abs(x) ** (s["alpha"] - 1) * np.sign(x)
        losses[:, it] = s["feature_weight"] * (diff ** 2).sum(axis=(1, 2, 3)) / norm + \
            s["alpha_weight"] * alpha + s["tv_weight"] * tv
        grad = g_feature + s["alpha_weight"] * g_alpha + s["tv_weight"] * g_tv
        buffer = grad if it == 0 else s["momentum"] * buffer + grad
        x = x - lr * buffer
        if s["clip_to_image"]:
            x = np.clip(x, 0.0, 1.0)
        lr = s["lr"] * s["lr_decay"] ** (it // s["decay_every"] + 1)
    return x, losses


def main() -> None:
    arrays = rn.random_weights()
    for case, settings in CASES.items():
        arrays[f"{case}:image"], arrays[f"{case}:loss"] = run(arrays, settings)
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
