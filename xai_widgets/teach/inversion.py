"""Exercises of ``06_feature_inversion``: the blend, the mask from the channel weights, and
which of the two steps knows the class."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from ..explain import explain
from ..explanation import Explanation
from ..models import ModelBundle
from ._common import relative_error, shape_message, tensor
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
    names = ("kept", "removed")
    references = (explanation.extras["blended"], explanation.extras["removed"])
    for name, value, reference in zip(names, answer, references, strict=True):
        value = tensor(value, name)
        problem = shape_message(value, tuple(reference.shape), name)
        if problem:
            return task.wrong(problem)
        error = relative_error(value.reshape(reference.shape), reference)
        if error > 1e-4:
            other = references[1 - names.index(name)]
            if relative_error(value.reshape(reference.shape), other) < 1e-4:
                return task.wrong(f"`{name}` is the other blend: x̃ keeps the photo where m "
                                  "is 1, x̄ where m is 0")
            return task.wrong(f"`{name}` differs from the toolkit's blend by {error:.0%} "
                              "(relative L2)")
    p = explanation.extras["probabilities"][0].tolist()
    return task.right(f"both blends match; the model gives the class p = {p[1]:.2f} on x̃ "
                      f"and p = {p[2]:.2f} on x̄ (p = {p[0]:.2f} on the photo)")


@exercise("fi.mask", NOTEBOOK, "the mask from the layer's weighted feature maps",
          answer="m", given=("explanation",), solution="""
    M = fi.extras["layer_mask"][:, None]                      # Σ_k w_k A_k, (1, 1, h, w)
    up = F.interpolate(M, size=x.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
    m = ((up - up.min()) / up.max()).clamp(0, 1)              # the authors' normaliser
""")
def _mask(answer: Any, *, explanation: Explanation) -> Verdict:
    task = EXERCISES["fi.mask"]
    reference = explanation.map.double()
    value = tensor(answer, "m")
    problem = shape_message(value, tuple(reference.shape), "m")
    if problem:
        return task.wrong(problem + " — upsample M to the input size")
    value = value.reshape(reference.shape)
    error = float((value - reference).abs().max())
    if error < 1e-4:
        return task.right("m = (up(M) − min) / max, clipped: the toolkit's mask exactly; the "
                          "authors divide by max, not by max − min, so m rarely reaches 1")
    layer_mask = explanation.extras["layer_mask"][:, None].double()
    size = tuple(reference.shape[-2:])
    for corners in (False, True):
        up = F.interpolate(layer_mask, size=size, mode="bilinear",
                           align_corners=corners)[:, 0]
        low, high = up.amin(), up.amax()
        if not corners and (value - ((up - low) / high).clamp(0, 1)).abs().max() < 1e-4:
            return task.wrong("almost: upsample with align_corners=True, as the authors do")
        if (value - (up - low) / (high - low)).abs().max() < 1e-4:
            return task.wrong("that is the min-max normaliser (÷ (max − min)); the authors "
                              "divide by max")
    return task.wrong(f"your mask differs from the toolkit's by up to {error:.2f}")


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

