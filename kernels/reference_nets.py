"""The tiny network behind every ``kernels/<method>/reference.npz``, twice over.

* :class:`TinyNet` is the torch module the tests explain with xai_widgets.
* The ``np_*`` functions compute the same network, its gradients and its backward rules in
  plain NumPy float64 with explicit loops: no torch, no autograd, no xai_widgets. The
  ``make_reference.py`` scripts build the references from these alone, so a reference agrees
  with our kernels only if both are right.

Architecture (input ``(N, 3, 8, 8)``):
``features.0`` conv 3→4, 3×3, pad 1 · ``features.1`` ReLU · ``features.2`` conv 4→6, 3×3,
stride 2, pad 1 · ``features.3`` ReLU (the GAP layer, 6×4×4) · global average pool ·
``classifier`` linear 6→5.

``variant`` only changes how the ReLUs are written, never the function: ``"module"``
(``nn.ReLU``), ``"inplace"`` (one ``nn.ReLU(inplace=True)`` reused for both),
``"functional"`` (``F.relu(..., inplace=True)`` in ``forward``, as DenseNet's last ReLU).

This file is not a package module: scripts and tests load it by path (the name ``kernels``
belongs to another distribution on PyPI).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPES = {
    "features.0.weight": (4, 3, 3, 3), "features.0.bias": (4,),
    "features.2.weight": (6, 4, 3, 3), "features.2.bias": (6,),
    "classifier.weight": (5, 6), "classifier.bias": (5,),
}
REFERENCE_SEED = 20161027


def random_weights(seed: int = REFERENCE_SEED) -> dict[str, np.ndarray]:
    """Weights and a batch of two inputs, float64, from a fixed seed."""
    rng = np.random.default_rng(seed)
    arrays = {name: rng.normal(0.0, 0.5, shape) for name, shape in SHAPES.items()}
    arrays["input"] = rng.normal(0.0, 1.0, (2, 3, 8, 8))
    arrays["targets"] = np.array([1, 3])
    return arrays


def load(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


# ---------------------------------------------------------------------------- torch module


def tiny_net(arrays: dict[str, np.ndarray], variant: str = "module"):
    """The torch TinyNet with ``arrays``' weights (float32), in eval mode."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            relu = nn.ReLU(inplace=True)
            self.features = nn.Sequential(
                nn.Conv2d(3, 4, 3, padding=1),
                relu if variant == "inplace" else nn.ReLU(),
                nn.Conv2d(4, 6, 3, stride=2, padding=1),
            )
            if variant != "functional":
                self.features.append(relu if variant == "inplace" else nn.ReLU())
            self.classifier = nn.Linear(6, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x)
            if variant == "functional":
                x = F.relu(x, inplace=True)
            return self.classifier(x.mean(dim=(2, 3)))

    net = TinyNet()
    state = {name: torch.tensor(arrays[name], dtype=torch.float32) for name in SHAPES}
    net.load_state_dict(state)
    return net.eval()


# ---------------------------------------------------------------------------- numpy reference


def np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1,
            pad: int = 1) -> np.ndarray:
    """Cross-correlation, ``x (N, C, H, W)``, ``w (K, C, 3, 3)``."""
    n, _, h, wd = x.shape
    k, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, k, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.einsum("nchw,kchw->nk", patch, w) + b
    return out


def np_conv_input_vjp(grad_out: np.ndarray, w: np.ndarray, input_shape: tuple[int, ...],
                      stride: int = 1, pad: int = 1) -> np.ndarray:
    """Gradient at the conv's input given the gradient at its output (explicit scatter)."""
    n, c, h, wd = input_shape
    _, _, kh, kw = w.shape
    grad_padded = np.zeros((n, c, h + 2 * pad, wd + 2 * pad))
    for i in range(grad_out.shape[2]):
        for j in range(grad_out.shape[3]):
            grad_padded[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw] += \
                np.einsum("nk,kchw->nchw", grad_out[:, :, i, j], w)
    return grad_padded[:, :, pad:pad + h, pad:pad + wd]


def np_forward(a: dict[str, np.ndarray], x: np.ndarray) -> dict[str, np.ndarray]:
    """Every intermediate of TinyNet, keyed by layer name, plus ``logits``."""
    z1 = np_conv(x, a["features.0.weight"], a["features.0.bias"])
    r1 = np.maximum(z1, 0)
    z2 = np_conv(r1, a["features.2.weight"], a["features.2.bias"], stride=2)
    r2 = np.maximum(z2, 0)
    logits = r2.mean(axis=(2, 3)) @ a["classifier.weight"].T + a["classifier.bias"]
    return {"input": x, "features.0": z1, "features.1": r1, "features.2": z2,
            "features.3": r2, "logits": logits}


def np_rectifier_vjp(grad: np.ndarray, pre: np.ndarray, rule: str) -> np.ndarray:
    """Backward through ReLU under ``rule``: gradient, guided or deconvnet."""
    if rule == "gradient":
        return grad * (pre > 0)
    if rule == "guided":
        return np.maximum(grad, 0) * (pre > 0)
    if rule == "deconvnet":
        return np.maximum(grad, 0)
    raise ValueError(rule)


def np_backward(a: dict[str, np.ndarray], x: np.ndarray, targets: np.ndarray,
                rule: str = "gradient") -> dict[str, np.ndarray]:
    """``∂ logit[n, targets[n]] / ∂`` every intermediate, under a backward rule."""
    f = np_forward(a, x)
    n = x.shape[0]
    h, w = f["features.3"].shape[2:]
    g_r2 = np.broadcast_to((a["classifier.weight"][targets] / (h * w))[:, :, None, None],
                           f["features.3"].shape).copy()
    g_z2 = np_rectifier_vjp(g_r2, f["features.2"], rule)
    g_r1 = np_conv_input_vjp(g_z2, a["features.2.weight"], f["features.1"].shape, stride=2)
    g_z1 = np_rectifier_vjp(g_r1, f["features.0"], rule)
    g_x = np_conv_input_vjp(g_z1, a["features.0.weight"], x.shape)
    assert g_x.shape == x.shape
    assert n == len(targets)
    return {"features.3": g_r2, "features.2": g_z2, "features.1": g_r1, "features.0": g_z1,
            "input": g_x}


def np_finite_difference_input_gradient(a: dict[str, np.ndarray], x: np.ndarray,
                                        targets: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the target logits with respect to every input value."""
    grad = np.zeros_like(x)
    rows = np.arange(len(targets))
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = eps
        up = np_forward(a, x + step)["logits"][rows, targets]
        down = np_forward(a, x - step)["logits"][rows, targets]
        grad[index] = (up - down)[index[0]] / (2 * eps)
    return grad


def np_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(N, h, w)`` with half-pixel centres (no corner alignment)."""
    n, h, w = maps.shape
    out_h, out_w = size

    def sample(count: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        centre = (np.arange(count) + 0.5) * length / count - 0.5
        centre = np.clip(centre, 0, length - 1)
        low = np.floor(centre).astype(int)
        high = np.minimum(low + 1, length - 1)
        return low, high, centre - low

    y0, y1, fy = sample(out_h, h)
    x0, x1, fx = sample(out_w, w)
    out = np.zeros((n, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            top = maps[:, y0[i], x0[j]] * (1 - fx[j]) + maps[:, y0[i], x1[j]] * fx[j]
            bottom = maps[:, y1[i], x0[j]] * (1 - fx[j]) + maps[:, y1[i], x1[j]] * fx[j]
            out[:, i, j] = top * (1 - fy[i]) + bottom * fy[i]
    return out
