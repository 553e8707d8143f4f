"""Exercises of ``08_which_map_to_trust``: an area under a curve, a pointing game, a sanity
check to predict."""

from __future__ import annotations

from typing import Any

import torch

from ..explanation import Explanation
from .core import EXERCISES, Verdict, exercise

NOTEBOOK = "08_which_map_to_trust"


@exercise("trust.auc", NOTEBOOK, "the area under a deletion curve", answer="area",
          given=("curve",), solution="""
    f, s = curve.fractions, curve.scores[0]
    area = float(((s[1:] + s[:-1]) / 2 * (f[1:] - f[:-1])).sum())   # trapezoids on [0, 1]
""")
def _auc(answer: Any, *, curve: Any) -> Verdict:
    task = EXERCISES["trust.auc"]
    value = float(answer)
    fractions, scores = curve.fractions.double(), curve.scores[0].double()
    reference = float(torch.trapezoid(scores, fractions))
    if abs(value - reference) < 1e-4:
        return task.right(f"area = {reference:.4f}, the trapezoid rule on [0, 1] (RISE's "
                          "protocol); a faithful map makes the deletion area small")
    widths = fractions[1:] - fractions[:-1]
    if abs(value - float((scores[:-1] * widths).sum())) < 1e-4 or \
            abs(value - float((scores[1:] * widths).sum())) < 1e-4:
        return task.wrong("that is a rectangle rule: average the two ends of each step")
    if abs(value - float(scores.mean())) < 1e-4:
        return task.wrong("the mean of the scores weighs the end points as much as the "
                          "others; use trapezoids (and the fractions as x)")
    return task.wrong(f"the area under the curve is not {value:.4f}; x is `curve.fractions` "
                      "from 0 to 1, y the scores")


@exercise("trust.pointing", NOTEBOOK, "where the map points", answer="point",
          given=("explanation", "box"), solution="""
    size = tuple(e.bundle.prepare(rocket).inputs.shape[-2:])
    values = F.interpolate(e.map[:, None], size=size, mode="bilinear")[0, 0].clamp(min=0)
    point = divmod(int(values.argmax()), size[1])        # (row, column) of the maximum
""")
def _pointing(answer: Any, *, explanation: Explanation, box: Any) -> Verdict:
    from .. import metrics

    task = EXERCISES["trust.pointing"]
    row, column = (int(v) for v in answer)
    result = metrics.pointing_game(explanation, boxes=box, tolerance=15)
    true_row, true_column = (int(v) for v in result.points[0])
    distance = max(abs(row - true_row), abs(column - true_column))
    verdict = ("a hit" if float(result.hits[0]) == 1 else
               f"a miss, {float(result.distances[0]):.0f} pixels from the box")
    if distance <= 1:
        return task.right(f"the maximum is at (row {true_row}, column {true_column}): "
                          f"{verdict} with the pointing game's 15-pixel tolerance")
    if abs(row - true_column) <= 1 and abs(column - true_row) <= 1:
        return task.wrong("row and column are swapped: give (row, column), i.e. (y, x)")
    return task.wrong(f"the map's maximum (upsampled to the input, bilinear) is not at "
                      f"{(row, column)}; it is {distance} pixels away")


@exercise("trust.sanity", NOTEBOOK, "which map survives the randomisation of the model",
          answer="survives", given=("bundle", "image"), solution="""
    final = {m: metrics.sanity_check(bundle, rocket, method=m, stages=3).final()["spearman"][0]
             for m in ("grad_cam", "guided_backprop")}
    survives = max(final, key=final.get)
""")
def _sanity(answer: Any, *, bundle: Any, image: Any) -> Verdict:
    from .. import metrics

    task = EXERCISES["trust.sanity"]
    methods = ("grad_cam", "guided_backprop")
    if answer not in methods:
        return task.wrong(f"answer {methods[0]!r} or {methods[1]!r}")
    final = {m: metrics.sanity_check(bundle, image, method=m, stages=3).final()["spearman"][0]
             for m in methods}
    best = max(final, key=final.__getitem__)
    story = (f"rank correlation with the original map once every layer is random: Grad-CAM "
             f"{final['grad_cam']:.2f}, guided backprop {final['guided_backprop']:.2f}")
    if answer == best:
        return task.right(story + "; a map that survives the loss of everything the model "
                          "learnt cannot be explaining what it learnt (Adebayo et al. 2018)")
    return task.wrong(story)
