"""Exercises of ``01_quickstart``: read the class list, hide a square to flip the class."""

from __future__ import annotations

from typing import Any

import torch

from ..models import ModelBundle
from ._common import logits, model_inputs
from .core import EXERCISES, Verdict, exercise

NOTEBOOK = "01_quickstart"
SQUARE = 56  # side of the hidden square, in pixels of the 224×224 model input


def occlude(inputs: torch.Tensor, corner: tuple[int, int], size: int = SQUARE) -> torch.Tensor:
    """A copy of ``inputs`` ``(N, 3, H, W)`` with the square of side ``size`` at ``corner``
    ``(x, y)`` set to 0 in normalised space: the data set's mean colour, a flat grey."""
    x, y = (int(v) for v in corner)
    hidden = inputs.clone()
    hidden[..., y:y + size, x:x + size] = 0
    return hidden


@exercise("quickstart.runner_up", NOTEBOOK, "the second most probable class",
          answer="runner_up", given=("bundle", "image"), solution="""
    runner_up = xw.explain(bundle, cat, "cam").top(2)[0][1][1]     # (index, name, p) of number 2
""")
def _runner_up(answer: Any, *, bundle: ModelBundle, image: Any) -> Verdict:
    task = EXERCISES["quickstart.runner_up"]
    probabilities = logits(bundle, model_inputs(bundle, image)).softmax(1)[0]
    order = probabilities.argsort(descending=True).tolist()
    names = [bundle.class_name(i) for i in order]
    if isinstance(answer, str):
        if answer not in names:
            return task.wrong(f"{answer!r} is not one of the model's class names")
        rank = names.index(answer)
    else:
        rank = order.index(int(answer))
    second = f"{names[1]!r} (index {order[1]}, p = {float(probabilities[order[1]]):.3f})"
    if rank == 1:
        return task.right(f"{second}; the top class {names[0]!r} has "
                          f"p = {float(probabilities[order[0]]):.3f}: the model hesitates "
                          "between close classes")
    if rank == 0:
        return task.wrong(f"{names[0]!r} is the most probable class; the runner-up is the "
                          "one below it")
    return task.wrong(f"that class is number {rank + 1} of {len(names)} "
                      f"(p = {float(probabilities[order[rank]]):.4f})")


@exercise("quickstart.occlusion", NOTEBOOK, "hide a square so that the class flips",
          answer="corner", given=("bundle", "image"), solution="""
    # occlusion (Zeiler & Fergus): slide the grey square over a grid, keep the corner where
    # the top class's probability falls the most (13 × 13 corners, 32 inputs per pass)
    x = bundle.prepare(rocket).inputs
    corners = [(cx, cy) for cy in range(0, 169, 14) for cx in range(0, 169, 14)]
    with torch.no_grad():
        p = torch.cat([bundle.model(torch.cat([occlude(x, c) for c in corners[i:i + 32]]))
                       for i in range(0, len(corners), 32)]).softmax(1)
    corner = corners[int(p[:, top].argmin())]
""")
def _occlusion(answer: Any, *, bundle: ModelBundle, image: Any) -> Verdict:
    task = EXERCISES["quickstart.occlusion"]
    x0, y0 = (int(v) for v in answer)
    inputs = model_inputs(bundle, image)
    height, width = inputs.shape[-2:]
    if not (0 <= x0 <= width - SQUARE and 0 <= y0 <= height - SQUARE):
        return task.wrong(f"the corner {(x0, y0)} puts the {SQUARE}×{SQUARE} square outside "
                          f"the {width}×{height} input; x and y go from 0 to "
                          f"{width - SQUARE}")
    before = logits(bundle, inputs).softmax(1)[0]
    after = logits(bundle, occlude(inputs, (x0, y0))).softmax(1)[0]
    top, new = int(before.argmax()), int(after.argmax())
    story = (f"p({bundle.class_name(top)}) went from {float(before[top]):.3f} to "
             f"{float(after[top]):.3f}")
    if new != top:
        return task.right(f"{story}; the model now says {bundle.class_name(new)!r} "
                          f"(p = {float(after[new]):.3f})")
    return task.wrong(f"{story}, and it is still the top class; hide another part (the "
                      "maps show where the evidence is, but a network can have it in "
                      "several places)")
