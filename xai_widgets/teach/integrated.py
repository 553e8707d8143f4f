"""Exercises of ``04_integrated_gradients_smoothgrad``: a Riemann sum, completeness,
what a baseline asks."""

from __future__ import annotations

from typing import Any

import torch

from ..explain import explain
from ..models import ModelBundle
from ._common import answer_tensor, class_index, compare, logits, model_inputs
from .core import EXERCISES, Verdict, exercise

NOTEBOOK = "04_integrated_gradients_smoothgrad"


@exercise("ig.riemann", NOTEBOOK, "integrated gradients as a right Riemann sum",
          answer="ig", given=("bundle", "image", "target", "baseline", "steps"), solution="""
    alphas = torch.arange(1, steps + 1) / steps                      # α_k = k/m, k = 1..m
    path = baseline + alphas.view(-1, 1, 1, 1) * (x - baseline)      # (m, 3, H, W)
    ig = (x - baseline) * input_gradients(bundle, path, target).mean(dim=0)
""")
def _riemann(answer: Any, *, bundle: ModelBundle, image: Any, target: Any, baseline: Any,
             steps: int) -> Verdict:
    x = model_inputs(bundle, image)
    value = answer_tensor(answer, tuple(x.shape[1:]), "ig",  # before the method's passes
                          "one attribution per input value (3 × H × W)")
    c = class_index(bundle, target)
    reference = explain(bundle, image, "integrated_gradients", target=c, n_steps=int(steps),
                        quadrature="riemann_right", baseline=torch.as_tensor(baseline),
                        progress=False).map[0].double()
    scores = logits(bundle, torch.cat([x, torch.as_tensor(baseline, dtype=x.dtype)]))
    delta = float(scores[0, c] - scores[1, c])
    return compare(
        EXERCISES["ig.riemann"], value, reference, "ig",
        tolerance=1e-2,  # float32 sums in another order differ by ~1e-3 on a real model
        right=f"your {steps}-step sum matches the toolkit's integrated gradients; Σ IG = "
              f"{float(reference.sum()):.3f} against f(x) − f(x') = {delta:.3f}: the gap is "
              "the quadrature error, which more steps (or Gauss–Legendre points) shrink",
        mistakes=((steps * reference, f"your attributions are {steps}× too large: average the "
                                      "gradients (sum / m), don't just add them"),),
        hint="the points are x' + (k/m)(x − x') for k = 1..m, and the mean gradient is "
             "multiplied by (x − x')")


@exercise("ig.completeness", NOTEBOOK, "what the attributions add up to",
          answer="total", given=("bundle", "image", "target", "baseline"), solution="""
    with torch.no_grad():
        f = bundle.model(torch.cat([x, baseline]))[:, target]
    total = float(f[0] - f[1])                # f(x) − f(x'): completeness
""")
def _completeness(answer: Any, *, bundle: ModelBundle, image: Any, target: Any,
                  baseline: Any) -> Verdict:
    task = EXERCISES["ig.completeness"]
    value = float(answer)
    x = model_inputs(bundle, image)
    c = class_index(bundle, target)
    scores = logits(bundle, torch.cat([x, torch.as_tensor(baseline, dtype=x.dtype)]))
    f_x, f_0 = float(scores[0, c]), float(scores[1, c])
    delta = f_x - f_0
    if abs(value - delta) <= 1e-3 * max(1.0, abs(delta)):
        return task.right(f"f(x) − f(x') = {f_x:.3f} − ({f_0:.3f}) = {delta:.3f}: the sum of "
                          "the attributions, whatever the number of steps (up to the "
                          "quadrature error)")
    if abs(value - f_x) <= 1e-3 * max(1.0, abs(f_x)):
        return task.wrong("that is f(x) alone; the attributions explain the change from the "
                          "baseline, f(x) − f(x')")
    probabilities = scores.softmax(1)[:, c]
    if abs(value - float(probabilities[0] - probabilities[1])) < 1e-3:
        return task.wrong("that is the change of the probability; the toolkit integrates the "
                          "gradient of the logit")
    return task.wrong(f"the attributions add up to the change of the class logit from the "
                      f"baseline to the photo (not {value:.4g})")


@exercise("ig.baseline", NOTEBOOK, "which baseline leaves more to explain",
          answer="larger", given=("bundle", "image", "target"), solution="""
    deltas = {b: float(xw.explain(bundle, cat, "integrated_gradients", target=target, n_steps=1,
                                  baseline=b).extras["delta"][0]) for b in ("black", "blurred")}
    larger = max(deltas, key=deltas.get)
""")
def _baseline(answer: Any, *, bundle: ModelBundle, image: Any, target: Any) -> Verdict:
    task = EXERCISES["ig.baseline"]
    if answer not in ("black", "blurred"):
        return task.wrong("answer 'black' or 'blurred'")
    c = class_index(bundle, target)
    deltas = {b: float(explain(bundle, image, "integrated_gradients", target=c, n_steps=1,
                               baseline=b, progress=False).extras["delta"][0])
              for b in ("black", "blurred")}
    best = max(deltas, key=deltas.__getitem__)
    story = (f"f(x) − f(x') is {deltas['black']:.2f} from black and {deltas['blurred']:.2f} "
             "from the blurred photo")
    if answer == best:
        return task.right(story + ": a baseline that already looks like the photo (the "
                          "blurred copy keeps colours and layout) leaves less to explain, and "
                          "the attributions show only what the rest adds")
    return task.wrong(story)
