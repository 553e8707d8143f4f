"""Exercises of ``03_gradients_guided_backprop`` (the Human-EYE project's figures)."""

from __future__ import annotations

from typing import Any

import torch

from ..explain import explain
from ..models import ModelBundle
from ..render import gradient_picture
from ._common import compare, pearson, tensor
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
    g = _one_gradient(gradient)
    return compare(
        EXERCISES["gradients.saliency"], answer, g.abs().amax(0), "saliency", tolerance=1e-6,
        right="S(p) = max_c |g_c(p)|, the map of Simonyan et al.: how much a small change of "
              "the pixel's most sensitive colour moves the class logit",
        source="max_c |g_c|",
        mistakes=((g.amax(0), "take the absolute value first: a large negative gradient "
                              "matters as much as a large positive one"),
                  (g.abs().sum(0), "Σ_c |g_c| is the gray rendering of the next exercise; "
                                   "Simonyan et al. take the maximum over channels"),
                  (g.abs().mean(0), "Simonyan et al. take the maximum over channels, not "
                                    "the mean")),
        shape_hint="one value per pixel: reduce the 3 colour channels")


@exercise("gradients.gray", NOTEBOOK, "the gray rendering of guided backprop",
          answer="gray", given=("gradient",), solution="""
    G = g.abs().sum(dim=0)                                   # Σ_c |g_c|
    low, top = G.min(), torch.quantile(G.flatten(), 0.99)    # min and 99th percentile
    gray = ((G - low) / (top - low)).clamp(0, 1)
""")
def _gray(answer: Any, *, gradient: Any) -> Verdict:
    g = _one_gradient(gradient)
    total = g.abs().sum(0)
    top = torch.quantile(total.flatten(), 0.99)
    return compare(
        EXERCISES["gradients.gray"], answer, gray_original(g), "gray", tolerance=1e-4,
        measure="largest", source="the original rendering",
        right="G = Σ_c |g_c|, stretched from its minimum to its 99th percentile and clipped: "
              "the brightest 1 % saturate, so the edges show",
        mistakes=(((total / top).clamp(0, 1),
                   "close: subtract the minimum before dividing (the original code does; the "
                   "difference is small because min G is near 0)"),
                  ((total - total.min()) / (total.max() - total.min()),
                   "you divided by the maximum: the original divides by the 99th percentile "
                   "and clips, otherwise a few pixels make the rest dark")),
        diagnose=lambda value: "values above 1: clip the result to [0, 1]"
        if float(value.max()) > 1 + 1e-6 else None)


def _one_gradient(gradient: Any) -> torch.Tensor:
    """The input gradient of one image, ``(3, H, W)`` (from ``(3, H, W)`` or ``(1, 3, H, W)``)."""
    g = tensor(gradient, "gradient")
    return g[0] if g.ndim == 4 else g


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

