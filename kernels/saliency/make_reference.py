"""Reference saliency (input gradient) of TinyNet, by hand in NumPy (no torch, no xai_widgets).

Run from anywhere: ``python kernels/saliency/make_reference.py`` rewrites reference.npz next
to this file. It holds TinyNet's weights, its input batch and targets (see
``kernels/reference_nets.py``) and ``map``, the raw gradient ``∂y_c/∂x``, ``(2, 3, 8, 8)``,
from the explicit NumPy backward of ``reference_nets``.

Checks before writing: the map agrees with central finite differences of the NumPy forward
(all 384 input values) to 1e-8, and, when captum is installed, with captum's ``Saliency``
(``abs=False``) on the torch TinyNet to float32 precision. Neither is stored.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402


def peer_check(arrays: dict[str, np.ndarray], expected: np.ndarray) -> None:
    """captum's Saliency on the torch TinyNet (an extra check; skipped without captum)."""
    try:
        import torch
        from captum.attr import Saliency
    except ImportError:
        print("captum not installed: peer check skipped")
        return
    net = rn.tiny_net(arrays)
    x = torch.tensor(arrays["input"], dtype=torch.float32, requires_grad=True)
    got = Saliency(net).attribute(x, target=torch.tensor(arrays["targets"]), abs=False)
    error = np.abs(got.detach().numpy() - expected).max()
    assert error < 1e-6 * np.abs(expected).max() + 1e-7, error
    print(f"captum Saliency agrees: max error {error:.2e}")


def main() -> None:
    arrays = rn.random_weights()
    x, targets = arrays["input"], arrays["targets"]
    gradient = rn.np_backward(arrays, x, targets)["input"]
    finite = rn.np_finite_difference_input_gradient(arrays, x, targets)
    assert np.abs(gradient - finite).max() < 1e-8, np.abs(gradient - finite).max()
    peer_check(arrays, gradient)
    arrays["map"] = gradient
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
