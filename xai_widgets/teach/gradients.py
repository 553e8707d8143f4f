"""Exercises of ``03_gradients_guided_backprop`` (the Human-EYE project's figures)."""

from __future__ import annotations

from typing import Any

import torch

from ..explain import explain
from ..models import ModelBundle
from ..render import gradient_picture
from ._common import pearson, relative_error, shape_message, tensor
from .core import EXERCISES, Verdict, exercise

NOTEBOOK = "03_gradients_guided_backprop"


def gray_original(g: torch.Tensor) -> torch.Tensor:
    """The projects' gray rendering of a gradient ``(3, H, W)``, as the toolkit renders it:
    ``G = Σ_c |g_c|``, then ``clip((G − min G) / (P99(G) − min G), 0, 1)``, ``(H, W)``."""
    return gradient_picture(g[None], "gray")[0, 0].double()


@exercise("gradients.saliency", NOTEBOOK, "Simonyan's saliency from the input gradient",
          answer="saliency", given=("gradient",), solution="""
    saliency = g.abs().amax(dim=0)        # max over the colour channels of |∂y_c/∂x|
""")
def _saliency(answer: Any, *, gradient: Any) -> Verdict:
    task = EXERCISES["gradients.saliency"]
    g = tensor(gradient, "gradient")
    if g.ndim == 4:
        g = g[0]
    value = tensor(answer, "saliency")
    problem = shape_message(value, tuple(g.shape[1:]), "saliency")
    if problem:
        return task.wrong(problem + " — one value per pixel: reduce the 3 colour channels")
    value = value.reshape(g.shape[1:])
    reference = g.abs().amax(0)
    if relative_error(value, reference) < 1e-6:
        return task.right("S(p) = max_c |g_c(p)|, the map of Simonyan et al.: how much a small "
                          "change of the pixel's most sensitive colour moves the class logit")
    for _name, candidate, why in (
            ("signed", g.amax(0), "take the absolute value first: a large negative gradient "
                                  "matters as much as a large positive one"),
            ("sum", g.abs().sum(0), "Σ_c |g_c| is the gray rendering of the next exercise; "
                                    "Simonyan et al. take the maximum over channels"),
            ("mean", g.abs().mean(0), "Simonyan et al. take the maximum over channels, not "
                                      "the mean")):
        if relative_error(value, candidate) < 1e-6:
            return task.wrong(why)
    return task.wrong(f"your map differs from max_c |g_c| by "
                      f"{relative_error(value, reference):.0%} (relative L2)")


@exercise("gradients.gray", NOTEBOOK, "the gray rendering of guided backprop",
          answer="gray", given=("gradient",), solution="""
    G = g.abs().sum(dim=0)                                   # Σ_c |g_c|
    low, top = G.min(), torch.quantile(G.flatten(), 0.99)    # min and 99th percentile
    gray = ((G - low) / (top - low)).clamp(0, 1)
""")
def _gray(answer: Any, *, gradient: Any) -> Verdict:
    task = EXERCISES["gradients.gray"]
    g = tensor(gradient, "gradient")
    if g.ndim == 4:
        g = g[0]
    value = tensor(answer, "gray")
    problem = shape_message(value, tuple(g.shape[1:]), "gray")
    if problem:
        return task.wrong(problem)
    value = value.reshape(g.shape[1:])
    reference = gray_original(g)
    if (value - reference).abs().max() < 1e-4:
        return task.right("G = Σ_c |g_c|, stretched from its minimum to its 99th percentile "
                          "and clipped: the brightest 1 % saturate, so the edges show")
    total = g.double().abs().sum(0)
    top = torch.quantile(total.flatten(), 0.99)
    if (value - (total / top).clamp(0, 1)).abs().max() < 1e-4:
        return task.wrong("close: subtract the minimum before dividing (the original code "
                          "does; the difference is small because min G is near 0)")
    if (value - (total - total.min()) / (total.max() - total.min())).abs().max() < 1e-4:
        return task.wrong("you divided by the maximum: the original divides by the 99th "
                          "percentile and clips, otherwise a few pixels make the rest dark")
    if value.max() > 1 + 1e-6:
        return task.wrong("values above 1: clip the result to [0, 1]")
    return task.wrong(f"your picture differs from the original rendering by up to "
                      f"{float((value - reference).abs().max()):.2f}")


@exercise("gradients.class_sensitive", NOTEBOOK,
          "which map changes with the class: guided backprop or Grad-CAM",
          answer="changes_more", given=("bundle", "image", "classes"), solution="""
    def similarity(method):
        a, b = (xw.explain(bundle, cat, method, target=c).map for c in classes)
        return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])

    changes_more = min(["guided_backprop", "grad_cam"], key=similarity)
""")
def _class_sensitive(answer: Any, *, bundle: ModelBundle, image: Any,
                     classes: Any) -> Verdict:
    task = EXERCISES["gradients.class_sensitive"]
    methods = ("guided_backprop", "grad_cam")
    if answer not in methods:
        return task.wrong(f"answer with a method name: {methods[0]!r} or {methods[1]!r}")
    similarity = {}
    for method in methods:
        a, b = (explain(bundle, image, method, target=c).map for c in classes)
        similarity[method] = pearson(a, b)
    best = min(similarity, key=similarity.__getitem__)
    table = (f"correlation of the maps of {classes[0]!r} and {classes[1]!r}: guided "
             f"backprop {similarity['guided_backprop']:.2f}, Grad-CAM "
             f"{similarity['grad_cam']:.2f}")
    if answer == best:
        return task.right(table + "; guided backprop's picture is mostly the photo's edges, "
                          "whatever the class (Adebayo et al. 2018, Nie et al. 2018)")
    return task.wrong(table)

