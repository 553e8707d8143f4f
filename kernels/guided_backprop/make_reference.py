"""Reference guided backprop of TinyNet, by hand in NumPy (no torch, no xai_widgets).

Run from anywhere: ``python kernels/guided_backprop/make_reference.py`` rewrites
reference.npz next to this file. It holds TinyNet's weights, its input batch and targets (see
``kernels/reference_nets.py``) and

* ``map``: the guided input signal, ``(2, 3, 8, 8)``: the explicit NumPy backward of
  ``reference_nets`` with the rule ``R_in = 1[x > 0] · [R_out]_+`` at both ReLUs;
* ``gradient``: the plain input gradient of the same batch, for contrast (the two must
  differ, else the reference would not exercise the rule).

When captum is installed the script also checks ``map`` against captum's ``GuidedBackprop``
on the ``"module"`` variant of the torch TinyNet (ReLU modules, which captum handles), to
float32 precision. captum is not used for the ``"functional"`` variant: it cannot reach a
functional ReLU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402


def peer_check(arrays: dict[str, np.ndarray], expected: np.ndarray) -> None:
    try:
        import torch
        from captum.attr import GuidedBackprop
    except ImportError:
        print("captum not installed: peer check skipped")
        return
    net = rn.tiny_net(arrays, "module")
    x = torch.tensor(arrays["input"], dtype=torch.float32, requires_grad=True)
    got = GuidedBackprop(net).attribute(x, target=torch.tensor(arrays["targets"]))
    error = np.abs(got.detach().numpy() - expected).max()
    assert error < 1e-6 * np.abs(expected).max() + 1e-7, error
    print(f"captum GuidedBackprop agrees on the module variant: max error {error:.2e}")


def main() -> None:
    arrays = rn.random_weights()
    x, targets = arrays["input"], arrays["targets"]
    guided = rn.np_backward(arrays, x, targets, rule="guided")["input"]
    gradient = rn.np_backward(arrays, x, targets)["input"]
    assert np.abs(guided - gradient).max() > 0.1 * np.abs(gradient).max()
    peer_check(arrays, guided)
    arrays["map"] = guided
    arrays["gradient"] = gradient
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
