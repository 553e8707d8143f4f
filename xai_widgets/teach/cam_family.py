"""Exercises of ``02_cam_family``: Grad-CAM's weights, CAM vs Grad-CAM, what a layer changes."""

from __future__ import annotations

from typing import Any

import torch

from ..explain import explain
from ..models import ModelBundle
from ._common import (
    answer_tensor,
    class_index,
    compare,
    fitted_scale,
    pearson,
    relative_error,
    trace,
)
from .core import EXERCISES, Verdict, exercise

NOTEBOOK = "02_cam_family"


@exercise("cam.weights", NOTEBOOK, "Grad-CAM's channel weights from the trace",
          answer="weights", given=("bundle", "image", "layer", "target"), solution="""
    A = t.activation(layer)[0]                  # (C, h, w) feature maps
    dA = t.gradient((target,), layer)[0]        # ∂y_c/∂A, (C, h, w)
    weights = dA.mean(dim=(1, 2))               # α_k: the spatial mean of the gradient
""")
def _weights(answer: Any, *, bundle: ModelBundle, image: Any, layer: str,
             target: Any) -> Verdict:
    c = class_index(bundle, target)
    t = trace(bundle, image, layer)
    activation = t.activation(layer)[0].double()
    channels, h, w = activation.shape
    weights = answer_tensor(answer, (channels,), "weights", "one weight per channel: average "
                            "the gradient over the h×w positions")
    student = torch.einsum("k,khw->hw", weights, activation)
    reference = explain(bundle, image, "grad_cam", target=c, layer=layer).map[0].double()
    scale = fitted_scale(student, reference)
    scaled = ((scale * reference, f"your map is Grad-CAM's times {scale:.3g}: the right "
               "shape, the wrong scale"),) if scale > 0 else ()
    mean_activations = activation.mean(dim=(1, 2))
    return compare(
        EXERCISES["cam.weights"], student, reference, "Σ_k α_k A_k with your weights",
        tolerance=1e-4, source="Grad-CAM's map",
        right=f"Σ_k α_k A_k reproduces the toolkit's Grad-CAM map at {layer}: the weights are "
              "the spatial mean of the gradient",
        mistakes=((h * w * reference, f"your map is {h * w} = h·w times Grad-CAM's: you "
                                      "summed the gradient over the positions; Grad-CAM "
                                      "averages it"),
                  *scaled,
                  (torch.einsum("k,khw->hw", mean_activations, activation),
                   "these are the mean activations; Grad-CAM's weights come from the "
                   "gradient of the class score at the layer")),
        hint=f"the weight of a channel is the mean over positions of ∂y_c/∂A_k for class {c}")


@exercise("cam.scale", NOTEBOOK, "Grad-CAM = CAM × what, on a GAP head",
          answer="scale", given=("bundle", "image"), solution="""
    h, w = cam.map.shape[-2:]     # the pooled layer's grid (7 × 7 here)
    scale = 1 / (h * w)           # α_k = W_ck / (h·w): global average pooling spreads each weight
""")
def _scale(answer: Any, *, bundle: ModelBundle, image: Any) -> Verdict:
    task = EXERCISES["cam.scale"]
    value = float(answer)
    cam = explain(bundle, image, "cam")
    grad_cam = explain(bundle, image, "grad_cam", target=cam.targets[0], layer=cam.layer)
    measured = fitted_scale(grad_cam.map[0], cam.map[0])
    h, w = cam.map.shape[-2:]
    fit = relative_error(grad_cam.map[0], measured * cam.map[0])
    if abs(value - measured) <= 1e-3 * abs(measured):
        return task.right(f"Grad-CAM at {cam.layer} is CAM × {measured:.5f} = CAM / {h * w} "
                          f"(residual {fit:.1e}): the gradient of a logit through global "
                          f"average pooling is W_ck / (h·w) at every position")
    if abs(value * measured - 1) < 1e-3:
        return task.wrong(f"upside down: CAM is Grad-CAM × {value:g}, so Grad-CAM = CAM × "
                          f"1/{value:g}")
    return task.wrong(f"the maps measured by the toolkit give Grad-CAM / CAM = {measured:.5f}"
                      f", not {value:.5g}; think about what global average pooling over a "
                      f"{h}×{w} grid does to the gradient")


@exercise("cam.layer", NOTEBOOK, "at which layer are two classes' maps most different",
          answer="most_specific", given=("bundle", "image", "layers", "classes"), solution="""
    def similarity(layer):
        a, b = (xw.explain(bundle, cat, "grad_cam", target=c, layer=layer) for c in classes)
        return float(torch.corrcoef(torch.stack([a.map.flatten(), b.map.flatten()]))[0, 1])

    most_specific = min(LAYERS, key=similarity)
""")
def _layer(answer: Any, *, bundle: ModelBundle, image: Any, layers: Any,
           classes: Any) -> Verdict:
    task = EXERCISES["cam.layer"]
    if answer not in layers:
        return task.wrong(f"choose one of {list(layers)}")
    similarity = {}
    for layer in layers:
        a, b = (explain(bundle, image, "grad_cam", target=c, layer=layer).map for c in classes)
        similarity[layer] = pearson(a, b)
    table = ", ".join(f"{layer}: {value:.2f}" for layer, value in similarity.items())
    best = min(similarity, key=similarity.__getitem__)
    if answer == best:
        return task.right(f"correlation between the maps of {classes[0]!r} and "
                          f"{classes[1]!r} — {table}: near the classifier both classes "
                          "point at the same object; earlier layers see parts and edges "
                          "that each class weighs differently")
    return task.wrong(f"correlation between the two classes' maps — {table}: the "
                      f"maps are least alike at {best}")
