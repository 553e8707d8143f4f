"""Reference excitation-backprop maps of TinyNet, by hand in NumPy (no torch, no xai_widgets).

Run from anywhere: ``python kernels/excitation_backprop/make_reference.py`` rewrites
reference.npz next to this file. The marginal winning probability (Zhang et al. 2016) is
propagated top-down through TinyNet with explicit NumPy loops (``kernels/reference_nets.py``'s
convolution and its transpose), biases ignored:

* linear head: ``P(x_j) = x_j w⁺_cj / Σ_j' x_j' w⁺_cj'`` from the one-hot target (the input of
  the head is the pooled, rectified ``features.3``, ≥ 0);
* global average pool: ``P(A_kij) = A_kij / Σ_ij A_kij · P(x_k)``;
* ReLU: the mass passes through;
* convolution 2 (input ``features.1`` ≥ 0): ``P_in = x ⊙ W⁺ᵀ(P_out / conv(x, W⁺))``;
* convolution 1 (input = the signed image): contributions split by sign,
  ``P_in = x⁺ ⊙ W⁺ᵀ s + x⁻ ⊙ W⁻ᵀ s`` with ``s = P_out / (conv(x⁺, W⁺) + conv(x⁻, W⁻))``
  (every unit that receives mass has a positive output: it feeds a ReLU).

Stored (with ``targets`` = 1 and 2): ``map:<layer>`` (channel sums, ``(2, h, w)``) for
``features.0 … features.3`` and ``mass:input`` (``(2, 3, 8, 8)``, the mass at the image).
Checks before writing: every layer's mass is 1 per image (no unit of TinyNet's batch receives
mass without an excitatory input).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402


def safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def head_mass(a: dict[str, np.ndarray], pooled: np.ndarray, targets: np.ndarray,
              contrastive: bool) -> np.ndarray:
    """Mass at the input of the linear head, ``(N, K)``: EB, or c-EB's difference."""
    out = np.zeros_like(pooled)
    for i, c in enumerate(targets):
        w = a["classifier.weight"][c]
        positive = pooled[i] * np.maximum(w, 0)
        out[i] = positive / positive.sum()
        if contrastive:  # the dual unit: negated weights
            negative = pooled[i] * np.maximum(-w, 0)
            out[i] -= negative / negative.sum()
    return out


def mwp(a: dict[str, np.ndarray], x: np.ndarray, targets: np.ndarray,
        contrastive: bool = False) -> dict[str, np.ndarray]:
    f = rn.np_forward(a, x)
    r1, r2 = f["features.1"], f["features.3"]
    h, w = r2.shape[2:]
    pooled = r2.mean(axis=(2, 3))
    m_pooled = head_mass(a, pooled, targets, contrastive)
    m_r2 = r2 * safe_divide(m_pooled, pooled * h * w)[:, :, None, None]
    w2 = a["features.2.weight"]
    z = rn.np_conv(r1, np.maximum(w2, 0), np.zeros(len(w2)), stride=2)
    m_r1 = r1 * rn.np_conv_input_vjp(safe_divide(m_r2, z), np.maximum(w2, 0), r1.shape,
                                     stride=2)
    w1 = a["features.0.weight"]
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    zero = np.zeros(len(w1))
    z1 = rn.np_conv(xp, np.maximum(w1, 0), zero) + rn.np_conv(xn, np.minimum(w1, 0), zero)
    s1 = safe_divide(m_r1, z1)
    m_x = xp * rn.np_conv_input_vjp(s1, np.maximum(w1, 0), x.shape) + \
        xn * rn.np_conv_input_vjp(s1, np.minimum(w1, 0), x.shape)
    return {"features.3": m_r2, "features.2": m_r2, "features.1": m_r1, "features.0": m_r1,
            "input": m_x}


def main() -> None:
    arrays = rn.random_weights()
    # targets 1 and 2 (not TinyNet's usual 1 and 3): class 3 has no excitatory input at the
    # head for the second image, so its mass would be lost at once
    arrays["targets"] = np.array([1, 2])
    masses = mwp(arrays, arrays["input"], arrays["targets"])
    for name, mass in masses.items():
        assert np.allclose(mass.sum(axis=(1, 2, 3)), 1.0), (name, mass.sum(axis=(1, 2, 3)))
        assert mass.min() >= 0
        if name == "input":
            arrays["mass:input"] = mass
        else:
            arrays[f"map:{name}"] = mass.sum(axis=1)
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
