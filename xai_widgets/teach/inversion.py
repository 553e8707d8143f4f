"""Exercises of ``06_feature_inversion``: the blend, the mask from the channel weights, and
which of the two steps knows the class."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from ..explain import explain
from ..explanation import Explanation
from ..models import ModelBundle
from ._common import compare
from .core import EXERCISES, Verdict, exercise

NOTEBOOK = "06_feature_inversion"


@exercise("fi.blend", NOTEBOOK, "keep and remove the foreground", answer="blends",
          given=("explanation",), solution="""
    m = fi.map[:, None]                  # (1, 1, H, W): the mask, broadcast over colours
    kept = x * m + p * (1 - m)           # x̃: the photo where the mask is on, background elsewhere
    removed = x * (1 - m) + p * m        # x̄: the other way round
    blends = (kept, removed)
""")
def _blend(answer: Any, *, explanation: Explanation) -> Verdict:
    task = EXERCISES["fi.blend"]
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return task.wrong("give the pair (kept, removed)")
    kept, removed = explanation.extras["blended"], explanation.extras["removed"]
    p = explanation.extras["probabilities"][0].tolist()
    first = compare(task, answer[0], kept, "kept", tolerance=1e-4, source="the toolkit's blend",
                    right="`kept` matches",
                    mistakes=((removed, "`kept` is the other blend: x̃ keeps the photo where m "
                                        "is 1, x̄ where m is 0"),))
    if not first:
        return first
    return compare(task, answer[1], removed, "removed", tolerance=1e-4,
                   source="the toolkit's blend",
                   right=f"both blends match; the model gives the class p = {p[1]:.2f} on x̃ "
                         f"and p = {p[2]:.2f} on x̄ (p = {p[0]:.2f} on the photo)",
                   mistakes=((kept, "`removed` is the other blend: x̄ keeps the photo where m "
                                    "is 0, x̃ where m is 1"),))


@exercise("fi.mask", NOTEBOOK, "the mask from the layer's weighted feature maps",
          answer="m", given=("explanation",), solution="""
    M = fi.extras["layer_mask"][:, None]                      # Σ_k w_k A_k, (1, 1, h, w)
    up = F.interpolate(M, size=x.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
    m = ((up - up.min()) / up.max()).clamp(0, 1)              # the authors' normaliser
""")
def _mask(answer: Any, *, explanation: Explanation) -> Verdict:
    reference = explanation.map.double()
    layer_mask = explanation.extras["layer_mask"][:, None].double()
    size = tuple(reference.shape[-2:])
    up, up_corners = (F.interpolate(layer_mask, size=size, mode="bilinear",
                                    align_corners=corners)[:, 0] for corners in (False, True))
    minmax = "that is the min-max normaliser (÷ (max − min)); the authors divide by max"
    return compare(
        EXERCISES["fi.mask"], answer, reference, "m", tolerance=1e-4, measure="largest",
        source="the toolkit's mask",
        right="m = (up(M) − min) / max, clipped: the toolkit's mask exactly; the authors "
              "divide by max, not by max − min, so m rarely reaches 1",
        mistakes=((((up - up.amin()) / up.amax()).clamp(0, 1),
                   "almost: upsample with align_corners=True, as the authors do"),
                  *(((u - u.amin()) / (u.amax() - u.amin()), minmax) for u in (up, up_corners))),
        shape_hint="upsample M to the input size")


@exercise("fi.step1", NOTEBOOK, "does step 1 know the class?", answer="same_after_step1",
          given=("bundle", "image", "classes", "layer", "step1"), solution="""
    masks = [xw.explain(small, cup, "feature_inversion", target=c, layer=layer,
                        iterations=step1, step1_iterations=step1).map for c in classes]
    same_after_step1 = bool(torch.allclose(masks[0], masks[1]))
""")
def _step1(answer: Any, *, bundle: ModelBundle, image: Any, classes: Any, layer: str,
           step1: int) -> Verdict:
    task = EXERCISES["fi.step1"]
    if not isinstance(answer, bool):
        return task.wrong("answer True or False")
    masks = [explain(bundle, image, "feature_inversion", target=c, layer=layer,
                     iterations=int(step1), step1_iterations=int(step1), progress=False).map
             for c in classes]
    difference = float((masks[0] - masks[1]).abs().max())
    same = difference < 1e-5
    story = (f"after the {step1} iterations of step 1 the masks of {classes[0]!r} and "
             f"{classes[1]!r} differ by at most {difference:.1e}")
    if answer == same:
        return task.right(story + ": step 1 only asks the blend to keep the layer's "
                          "features, so it cannot know the class; step 2 brings it in")
    return task.wrong(story)

