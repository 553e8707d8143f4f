"""Exercises of ``05_excitation_backprop``: the winning probability through the classifier,
its contrastive form, and which of the two tells classes apart."""

from __future__ import annotations

from typing import Any

import torch

from ..explain import explain
from ..models import ModelBundle
from ._common import class_index, compare, pearson, trace
from .core import EXERCISES, Verdict, exercise

NOTEBOOK = "05_excitation_backprop"


def _per_channel(bundle: ModelBundle, image: Any, layer: str, target: Any, rule: str
                 ) -> torch.Tensor:
    """The toolkit's signal of ``rule`` at ``layer``, summed over positions: ``(C,)``."""
    t = trace(bundle, image, layer, rule)
    return t.gradient((class_index(bundle, target),), layer)[0].double().sum(dim=(1, 2))


@exercise("eb.top_layer", NOTEBOOK, "excitation backprop through the classifier",
          answer="P", given=("bundle", "image", "layer", "target"), solution="""
    w = W[target].clamp(min=0)        # excitatory weights of the class unit, W⁺
    P = a * w / (a @ w)               # each input's share of the excitation: sums to 1
""")
def _top_layer(answer: Any, *, bundle: ModelBundle, image: Any, layer: str,
               target: Any) -> Verdict:
    reference = _per_channel(bundle, image, layer, target, "excitation")

    def mass(value: torch.Tensor) -> str | None:
        total = float(value.sum())
        return None if abs(total - 1) <= 1e-3 else (
            f"Σ P = {total:.4f}: the shares must add up to the class unit's probability, 1 — "
            "divide by Σ_j a_j w⁺_j")

    return compare(
        EXERCISES["eb.top_layer"], answer, reference, "P", tolerance=1e-3,
        right=f"your P matches the toolkit's excitation backprop at {layer}, summed over "
              f"positions; Σ P = {float(reference.sum()):.4f}: the probability mass is "
              "conserved",
        diagnose=mass,
        shape_hint="one probability per input of the classifier",
        hint="only the excitatory (positive) weights of the class take part, W⁺ = max(W, 0)")


@exercise("eb.contrastive_top", NOTEBOOK, "contrastive excitation backprop through the "
          "classifier", answer="P_contrast", given=("bundle", "image", "layer", "target"),
          solution="""
    z = a * W[target]                                  # each input's contribution to the logit
    positive, negative = z.clamp(min=0), (-z).clamp(min=0)
    P_contrast = positive / positive.sum() - negative / negative.sum()   # MWP(o) − MWP(ō)
""")
def _contrastive(answer: Any, *, bundle: ModelBundle, image: Any, layer: str,
                 target: Any) -> Verdict:
    reference = _per_channel(bundle, image, layer, target, "contrastive_excitation")

    def mass(value: torch.Tensor) -> str | None:
        total = float(value.sum())
        return None if abs(total) <= 1e-3 else (
            f"Σ = {total:.3f}, but both parts carry a mass of 1, so their difference sums to 0")

    return compare(
        EXERCISES["eb.contrastive_top"], answer, reference, "P_contrast", tolerance=1e-3,
        source="the toolkit's c-EB",
        right=f"matches the toolkit's c-EB at {layer}; it sums to "
              f"{float(reference.sum()):+.1e}: evidence for the class minus evidence against it",
        diagnose=mass,
        hint="the dual unit ō has the negated weights, so its shares come from the negative "
             "contributions a_j W_cj < 0")


@exercise("eb.discriminative", NOTEBOOK, "which map tells two classes apart",
          answer="tells_apart", given=("bundle", "image", "layer", "classes"), solution="""
    def similarity(method):
        a, b = (xw.explain(bundle, photo, method, target=c, layer=layer).map for c in classes)
        return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])

    tells_apart = min(["excitation_backprop", "contrastive_excitation_backprop"], key=similarity)
""")
def _discriminative(answer: Any, *, bundle: ModelBundle, image: Any, layer: str,
                    classes: Any) -> Verdict:
    task = EXERCISES["eb.discriminative"]
    methods = ("excitation_backprop", "contrastive_excitation_backprop")
    if answer not in methods:
        return task.wrong(f"answer {methods[0]!r} or {methods[1]!r}")
    similarity = {}
    for method in methods:
        a, b = (explain(bundle, image, method, target=c, layer=layer).map for c in classes)
        similarity[method] = pearson(a, b)
    best = min(similarity, key=similarity.__getitem__)
    story = (f"correlation of the maps of {classes[0]!r} and {classes[1]!r}: EB "
             f"{similarity[methods[0]]:.2f}, c-EB {similarity[methods[1]]:.2f}")
    if answer == best:
        return task.right(story + "; the contrastive map removes what every class finds "
                          "salient and keeps what speaks for this one")
    return task.wrong(story)
