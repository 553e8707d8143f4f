"""Reference pieces of the layer-wise inverse on TinyNet, computed without torch or xai_widgets.

Run from anywhere: ``python kernels/layerwise_inverse/make_reference.py`` rewrites
reference.npz next to this file (NumPy float64; SciPy's L-BFGS-B, a long-run bounded
quasi-Newton solver, for the optimisation problems). TinyNet (``kernels/reference_nets.py``)
is a chain: ``conv + ReLU`` (unit 0), ``conv (stride 2) + ReLU`` (unit 1), the spatial mean
(unit 2) and the linear classifier (unit 3). Stored:

* ``block1:y`` a sub-activation of ``features.3`` (the inverse above unit 1),
  ``block1:objective`` ``(2,)`` the optimum of
  ``‖ŷ − ReLU(conv₂ x)‖ + λ ‖μ ⊙ x‖`` over ``0 ≤ x ≤ features.1`` with ``ŷ`` rescaled to the
  forward output's norm, ``μ = 1 − s / max s`` (``s = Σ_c |y_c|``, nearest-resized), λ = 0.7;
* ``convex:objective``: the same problem without the ReLU (``conv₂`` alone, output
  ``features.2``): convex, so its optimum is the global one whatever the start;
* ``block0:y``, ``block0:objective``: the same for unit 0, whose box is sign-consistent
  (``x`` between 0 and the image);
* ``margin:objective`` ``(2,)``, ``margin:x`` ``(2, 6)``: the optimum of
  ``logsumexp_{j≠t} z_j − z_t`` over ``0 ≤ x ≤ GAP features`` (convex);
* ``pool:input`` ``(2, 3, 7, 7)``, ``pool:y`` and the max-unpooling by explicit loops for a
  2×2/stride-2 pool (``pool:plain``) and an overlapping 3×3/stride-2 pool (``pool:overlap``,
  the largest value where windows share a winner);
* ``ratio:inverse``, ``ratio:amount``, ``ratio:heat``: the attribution ``Σ_c |x̂_c|/(|x_c| +
  1e-6)`` and the authors' amount of activation of a random sub-image ``x̂`` of ``input``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import reference_nets as rn  # noqa: E402

LAMBDA = 0.7
EPS = 1e-20


def norm(v: np.ndarray) -> float:
    return float(np.sqrt((v ** 2).sum() + EPS))


def block_problem(weight: np.ndarray, bias: np.ndarray, stride: int, inputs: np.ndarray,
                  output: np.ndarray, y: np.ndarray, relu: bool = True) -> np.ndarray:
    """Optimum of the block objective for every image (L-BFGS-B, box bounds)."""
    values = []
    for i in range(inputs.shape[0]):
        v, out, yi = inputs[i:i + 1], output[i:i + 1], y[i:i + 1]
        target = yi * norm(out) / (norm(yi) + 1e-10)
        s = np.abs(yi).sum(1, keepdims=True)
        mu_small = 1 - s / s.max()
        factor = v.shape[2] // yi.shape[2]
        mu = mu_small.repeat(factor, 2).repeat(factor, 3)

        def objective(flat: np.ndarray, v: np.ndarray = v, target: np.ndarray = target,
                      mu: np.ndarray = mu) -> tuple[float, np.ndarray]:
            x = flat.reshape(v.shape)
            pre = rn.np_conv(x, weight, bias, stride=stride)
            r = target - (np.maximum(pre, 0) if relu else pre)
            rn_, pn = norm(r), norm(mu * x)
            g_pre = -(r / rn_) * ((pre > 0) if relu else 1.0)
            g = rn.np_conv_input_vjp(g_pre, weight, x.shape, stride=stride)
            g += LAMBDA * mu ** 2 * x / pn
            return rn_ + LAMBDA * pn, g.ravel()

        low, high = np.minimum(v, 0).ravel(), np.maximum(v, 0).ravel()
        best = minimize(objective, (low + high) / 2, jac=True, method="L-BFGS-B",
                        bounds=list(zip(low, high, strict=True)),
                        options={"maxiter": 50000, "maxfun": 100000, "ftol": 1e-15,
                                 "gtol": 1e-12})
        values.append(best.fun)
    return np.array(values)


def margin_problem(a: dict[str, np.ndarray], features: np.ndarray, targets: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    w, b = a["classifier.weight"], a["classifier.bias"]
    values, solutions = [], []
    for i, t in enumerate(targets):
        others = [j for j in range(w.shape[0]) if j != t]

        def objective(x: np.ndarray, t: int = t, others: list[int] = others
                      ) -> tuple[float, np.ndarray]:
            z = w @ x + b
            top = z[others].max()
            e = np.exp(z[others] - top)
            value = top + np.log(e.sum()) - z[t]
            q = np.zeros_like(z)
            q[others] = e / e.sum()
            q[t] -= 1
            return value, w.T @ q

        bounds = list(zip(np.minimum(features[i], 0), np.maximum(features[i], 0),
                          strict=True))
        best = minimize(objective, features[i] / 2, jac=True, method="L-BFGS-B",
                        bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-12})
        values.append(best.fun)
        solutions.append(best.x)
    return np.array(values), np.stack(solutions)


def unpool(inputs: np.ndarray, y: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    out = np.zeros_like(inputs)
    filled = np.zeros(inputs.shape, dtype=bool)
    n, c = inputs.shape[:2]
    for i in range(n):
        for k in range(c):
            for oi in range(y.shape[2]):
                for oj in range(y.shape[3]):
                    window = inputs[i, k, oi * stride:oi * stride + kernel,
                                    oj * stride:oj * stride + kernel]
                    di, dj = np.unravel_index(window.argmax(), window.shape)
                    p, q = oi * stride + di, oj * stride + dj
                    value = y[i, k, oi, oj]
                    out[i, k, p, q] = value if not filled[i, k, p, q] else \
                        max(out[i, k, p, q], value)
                    filled[i, k, p, q] = True
    return out


def main() -> None:
    a = rn.random_weights()
    rng = np.random.default_rng(4)
    x, targets = a["input"], a["targets"]
    f = rn.np_forward(a, x)

    a["block1:y"] = f["features.3"] * rng.uniform(0, 1, f["features.3"].shape)
    a["block1:objective"] = block_problem(a["features.2.weight"], a["features.2.bias"], 2,
                                          f["features.1"], f["features.3"], a["block1:y"])
    a["convex:objective"] = block_problem(a["features.2.weight"], a["features.2.bias"], 2,
                                          f["features.1"], f["features.2"], a["block1:y"],
                                          relu=False)
    a["block0:y"] = f["features.1"] * rng.uniform(0, 1, f["features.1"].shape)
    a["block0:objective"] = block_problem(a["features.0.weight"], a["features.0.bias"], 1,
                                          x, f["features.1"], a["block0:y"])
    a["margin:objective"], a["margin:x"] = margin_problem(
        a, f["features.3"].mean(axis=(2, 3)), targets)

    pool_input = rng.normal(size=(2, 3, 7, 7))
    a["pool:input"] = pool_input
    a["pool:y_plain"] = rng.uniform(-1, 1, (2, 3, 3, 3))
    a["pool:plain"] = unpool(pool_input, a["pool:y_plain"], 2, 2)
    a["pool:y_overlap"] = rng.uniform(-1, 1, (2, 3, 3, 3))
    a["pool:overlap"] = unpool(pool_input, a["pool:y_overlap"], 3, 2)

    inverse = x * rng.uniform(0, 1, x.shape)
    ratio = np.abs(inverse) / (np.abs(x) + 1e-6)
    a["ratio:inverse"] = inverse
    a["ratio:heat"] = ratio.sum(1)
    shifted = (ratio - ratio.min(axis=(2, 3), keepdims=True)).sum(1)
    a["ratio:amount"] = (shifted / shifted.max(axis=(1, 2), keepdims=True)).mean(axis=(1, 2))
    np.savez(HERE / "reference.npz", **a)


if __name__ == "__main__":
    main()
