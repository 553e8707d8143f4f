"""Reference DeconvNet signal of TinyNet, by hand in NumPy (no torch, no xai_widgets).

Run from anywhere: ``python kernels/deconvnet/make_reference.py`` rewrites reference.npz next
to this file. It holds TinyNet's weights, its input batch and targets (see
``kernels/reference_nets.py``) and

* ``map``: the DeconvNet input signal, ``(2, 3, 8, 8)``: the explicit NumPy backward of
  ``reference_nets`` with the rule ``R_in = [R_out]_+`` at both ReLUs (forward ignored);
* ``guided``: guided backprop of the same batch, for contrast (the two must differ).

TinyNet has no max-pooling, so its DeconvNet signal does not depend on the input at all; the
script checks that on a second, unrelated input. When captum is installed it also checks
``map`` against captum's ``Deconvolution`` on the ``"module"`` variant of the torch TinyNet.
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
        from captum.attr import Deconvolution
    except ImportError:
        print("captum not installed: peer check skipped")
        return
    net = rn.tiny_net(arrays, "module")
    x = torch.tensor(arrays["input"], dtype=torch.float32, requires_grad=True)
    got = Deconvolution(net).attribute(x, target=torch.tensor(arrays["targets"]))
    error = np.abs(got.detach().numpy() - expected).max()
    assert error < 1e-6 * np.abs(expected).max() + 1e-7, error
    print(f"captum Deconvolution agrees on the module variant: max error {error:.2e}")


def main() -> None:
    arrays = rn.random_weights()
    x, targets = arrays["input"], arrays["targets"]
    deconv = rn.np_backward(arrays, x, targets, rule="deconvnet")["input"]
    guided = rn.np_backward(arrays, x, targets, rule="guided")["input"]
    assert np.abs(deconv - guided).max() > 0.1 * np.abs(guided).max()
    other = np.random.default_rng(1).normal(0.0, 1.0, x.shape)
    assert np.allclose(rn.np_backward(arrays, other, targets, rule="deconvnet")["input"],
                       deconv, rtol=1e-12, atol=1e-15)
    peer_check(arrays, deconv)
    arrays["map"] = deconv
    arrays["guided"] = guided
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
