"""Reference contrastive excitation-backprop (c-EB) maps of TinyNet, by hand in NumPy.

Run from anywhere: ``python kernels/contrastive_excitation_backprop/make_reference.py``
rewrites reference.npz next to this file. No torch, no xai_widgets. At the linear head the
mass of the target unit ``o`` over its inputs (``x_j w⁺_cj / Σ x w⁺_c``) minus that of its
dual ``ō`` with negated weights (``x_j w⁻_cj / Σ x w⁻_c``, ``w⁻ = max(−w, 0)``); below,
excitation backprop's rules (``kernels/excitation_backprop/make_reference.py``, whose NumPy
propagation is reused: it is linear in the incoming mass) carry the difference down.

Stored: ``map:<layer>`` (channel sums, ``(2, h, w)``) for ``features.0 … features.3`` and
``mass:input`` (``(2, 3, 8, 8)``, at the image). Checks before writing: every layer's total
is 0 per image, and the map equals EB of the target minus EB of the dual computed as two
separate propagations.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "excitation_backprop"))
import make_reference as eb  # noqa: E402
import reference_nets as rn  # noqa: E402


def main() -> None:
    arrays = rn.random_weights()
    # targets 1 and 2 (not TinyNet's usual 1 and 3): class 3 has no excitatory input at the
    # head for the second image, so its mass would be lost at once
    arrays["targets"] = np.array([1, 2])
    x, targets = arrays["input"], arrays["targets"]
    masses = eb.mwp(arrays, x, targets, contrastive=True)
    dual = dict(arrays)
    dual["classifier.weight"] = -arrays["classifier.weight"]
    target_eb, dual_eb = eb.mwp(arrays, x, targets), eb.mwp(dual, x, targets)
    for name, mass in masses.items():
        assert np.allclose(mass.sum(axis=(1, 2, 3)), 0.0, atol=1e-12), name
        assert np.allclose(mass, target_eb[name] - dual_eb[name]), name
        if name == "input":
            arrays["mass:input"] = mass
        else:
            arrays[f"map:{name}"] = mass.sum(axis=1)
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
