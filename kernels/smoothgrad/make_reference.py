"""Reference SmoothGrad, SmoothGrad² and VarGrad of TinyNet, by hand in NumPy (float64).

Run from anywhere: ``python kernels/smoothgrad/make_reference.py`` rewrites reference.npz next
to this file. No torch, no xai_widgets: TinyNet's backward (plain and guided) is the explicit
NumPy loop of ``kernels/reference_nets.py``. It holds TinyNet's weights, input batch and
targets, ``noise`` (8 standard normal images ``(8, 3, 8, 8)`` from NumPy's generator: the
tests hand them to our kernel in place of its own draws) and, with ``noise_level = 0.2``,
``σ_i = 0.2 · (max x_i − min x_i)`` and ``M_s = M(x + σ ε_s)``:

* ``<base>:mean``      ``(1/n) Σ_s M_s``              (SmoothGrad)
* ``<base>:square``    ``(1/n) Σ_s M_s²``             (SmoothGrad²)
* ``<base>:variance``  ``(1/n) Σ_s M_s² − mean²``     (VarGrad)

for ``<base>`` = ``saliency`` (``∂y_c/∂x``), ``input_x_gradient`` (``x ⊙ ∂y_c/∂x`` at the noisy
input) and ``guided_backprop``, each ``(2, 3, 8, 8)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402

SAMPLES = 8
LEVEL = 0.2


def main() -> None:
    arrays = rn.random_weights()
    x, targets = arrays["input"], arrays["targets"]
    noise = np.random.default_rng(7).normal(0.0, 1.0, (SAMPLES, *x.shape[1:]))
    arrays["noise"] = noise
    sigma = LEVEL * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    maps: dict[str, list[np.ndarray]] = {"saliency": [], "input_x_gradient": [],
                                         "guided_backprop": []}
    for s in range(SAMPLES):
        noisy = x + sigma[:, None, None, None] * noise[s]
        gradient = rn.np_backward(arrays, noisy, targets)["input"]
        maps["saliency"].append(gradient)
        maps["input_x_gradient"].append(noisy * gradient)
        maps["guided_backprop"].append(rn.np_backward(arrays, noisy, targets, "guided")["input"])
    for base, values in maps.items():
        stack = np.stack(values)
        mean = stack.mean(axis=0)
        arrays[f"{base}:mean"] = mean
        arrays[f"{base}:square"] = (stack ** 2).mean(axis=0)
        arrays[f"{base}:variance"] = (stack ** 2).mean(axis=0) - mean ** 2
        assert np.allclose(arrays[f"{base}:variance"], stack.var(axis=0))
    np.savez(HERE / "reference.npz", **arrays)


if __name__ == "__main__":
    main()
