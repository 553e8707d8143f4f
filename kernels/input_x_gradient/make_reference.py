"""Reference input × gradient of TinyNet, by hand in NumPy (no torch, no xai_widgets).

Run from anywhere: ``python kernels/input_x_gradient/make_reference.py`` rewrites
reference.npz next to this file. It holds TinyNet's weights, its input batch and targets (see
``kernels/reference_nets.py``) and

* ``map``: ``x ⊙ ∂y_c/∂x``, ``(2, 3, 8, 8)``, from the explicit NumPy backward;
* ``map:bias_free`` and ``logits:bias_free``: the same map, and the target logits, for
  TinyNet with every bias set to zero (``*.bias:bias_free`` hold those zeros). That network
  is positively homogeneous of degree 1 (convolutions without bias, ReLU, mean, linear
  without bias), so Euler's identity holds: ``Σ map:bias_free = logits:bias_free``.

Checks before writing: the gradient agrees with central finite differences to 1e-8 and the
Euler identity holds to 1e-12.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402


def main() -> None:
    arrays = rn.random_weights()
    x, targets = arrays["input"], arrays["targets"]
    gradient = rn.np_backward(arrays, x, targets)["input"]
    finite = rn.np_finite_difference_input_gradient(arrays, x, targets)
    assert np.abs(gradient - finite).max() < 1e-8, np.abs(gradient - finite).max()
    arrays["map"] = x * gradient

    bias_free = {k: np.zeros_like(v) if k.endswith(".bias") else v for k, v in arrays.items()}
    map_bias_free = x * rn.np_backward(bias_free, x, targets)["input"]
    logits = rn.np_forward(bias_free, x)["logits"][np.arange(len(targets)), targets]
    assert np.allclose(map_bias_free.sum(axis=(1, 2, 3)), logits, rtol=1e-12, atol=1e-12)
    arrays["map:bias_free"] = map_bias_free
    arrays["logits:bias_free"] = logits
    arrays.update({f"{k}:bias_free": v for k, v in bias_free.items() if k.endswith(".bias")})
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
