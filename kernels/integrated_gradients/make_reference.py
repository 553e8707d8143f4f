"""Reference integrated gradients of TinyNet: 10,000-step Riemann sums in NumPy (float64).

Run from anywhere: ``python kernels/integrated_gradients/make_reference.py`` rewrites
reference.npz next to this file. No torch, no xai_widgets: TinyNet's forward and backward are
the explicit NumPy loops of ``kernels/reference_nets.py`` (checked there against finite
differences). It holds TinyNet's weights, input batch and targets, and for two baselines
(``black``: zeros, which is the black photo under TinyNet's identity normalisation, and
``user``: the stored random tensor ``user_baseline``):

* ``ig:<baseline>``    ``(x − x') · (1/m) Σ_{k=1..m} ∂y_c/∂x (x' + k/m (x − x'))``, m = 10,000
  (the paper's right Riemann sum), ``(2, 3, 8, 8)``;
* ``delta:<baseline>`` ``y_c(x) − y_c(x')``, ``(2,)``.

Checks before writing: completeness, ``|Σ IG − delta| < 1e-3 · Σ |IG|`` (TinyNet is piecewise
linear, so the Riemann error is O(1/m)); with captum installed, captum's
``IntegratedGradients`` (riemann_right, same steps) agrees to float32 precision. Neither is
stored.
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


def riemann_right(arrays: dict[str, np.ndarray], x: np.ndarray, baseline: np.ndarray,
                  targets: np.ndarray) -> np.ndarray:
    """Right Riemann sum of the input gradient along the straight path, times x − x'."""
    total = np.zeros_like(x)
    for start in range(0, STEPS, CHUNK):
        alphas = (np.arange(start, start + CHUNK) + 1) / STEPS
        for i in range(len(x)):
            path = baseline[i] + alphas[:, None, None, None] * (x[i] - baseline[i])
            grads = rn.np_backward(arrays, path, np.full(CHUNK, targets[i]))["input"]
            total[i] += grads.sum(axis=0)
    return (x - baseline) * total / STEPS


def target_logits(arrays: dict[str, np.ndarray], x: np.ndarray,
                  targets: np.ndarray) -> np.ndarray:
    return rn.np_forward(arrays, x)["logits"][np.arange(len(x)), targets]


def peer_check(arrays: dict[str, np.ndarray], baseline: np.ndarray,
               expected: np.ndarray) -> None:
    try:
        import torch
        from captum.attr import IntegratedGradients
    except ImportError:
        print("captum not installed: peer check skipped")
        return
    net = rn.tiny_net(arrays)
    x = torch.tensor(arrays["input"], dtype=torch.float32)
    got = IntegratedGradients(net).attribute(
        x, torch.tensor(baseline, dtype=torch.float32), target=torch.tensor(arrays["targets"]),
        n_steps=STEPS, method="riemann_right", internal_batch_size=CHUNK)
    error = np.abs(got.numpy() - expected).max()
    assert error < 1e-4 * np.abs(expected).max(), error
    print(f"captum IntegratedGradients agrees: max error {error:.2e}")


def main() -> None:
    arrays = rn.random_weights()
    x, targets = arrays["input"], arrays["targets"]
    arrays["user_baseline"] = np.random.default_rng(5).normal(0.0, 0.5, x.shape)
    for name, baseline in (("black", np.zeros_like(x)), ("user", arrays["user_baseline"])):
        ig = riemann_right(arrays, x, baseline, targets)
        delta = target_logits(arrays, x, targets) - target_logits(arrays, baseline, targets)
        scale = np.abs(ig).sum(axis=(1, 2, 3))
        error = np.abs(ig.sum(axis=(1, 2, 3)) - delta) / scale
        assert error.max() < 1e-3, error
        peer_check(arrays, baseline, ig)
        arrays[f"ig:{name}"], arrays[f"delta:{name}"] = ig, delta
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
