"""Deliberative explanations: where, and between which classes, the network hesitates.

Wang, Vasconcelos. "Deliberative Explanations: visualizing network insecurities." NeurIPS
2019. arXiv:1910.13888.

A difficulty score ``s(x)`` says how hard an image is (``cs`` = 1 − max p, the normalised
``entropy``, or a trained hardness predictor ``hp``). At a layer ``A`` (default: the last
spatial one), attribution maps of the top classes ``a_c`` and of the score ``d`` are computed
per cell; at each cell the strongest classes form pairs, and the *insecurity* of a pair is

    m_ab = â_a ⊙ â_b ⊙ d̂        (each map made ≥ 0 and scaled by its maximum)

the regions that support both classes and make the image hard: where the network could not
decide between ``a`` and ``b``. A segment keeps the top ``area`` fraction of ``m_ab``.

>>> from xai_widgets import deliberative as dl
>>> r = dl.insecurities(bundle, photo, difficulty="entropy", attribution="gradient")
>>> r.difficulty, r.pairs[0], r.segment(r.pairs[0], area=0.1).mask.shape
>>> dl.hardest(bundle, "photos/", k=100, difficulty="entropy")

Modules: :mod:`.scores` (difficulty scores), :mod:`.maps` (batched class / difficulty maps:
gradient, integrated gradients, gradient–Hessian), :mod:`.ambiguity` (pairs, triple product,
segments), :mod:`.result` (the result object and its pictures), :mod:`.core` (the API and the
cache), :mod:`.hardness` (the hardness predictor and its training), :mod:`.evaluation` (part
points and object masks in the model's geometry, common parts from similarity tables),
:mod:`.cli` (``xai-widgets insecurities``).
"""

from __future__ import annotations

from .ambiguity import pair_set, prepare_maps, top_fraction
from .core import Analysis, analyse, insecurities
from .evaluation import (
    average,
    common_objects,
    common_parts,
    mask_to_input,
    object_scores,
    object_similarity,
    part_divergence,
    part_scores,
    points_to_input,
)
from .hardness import (
    HardnessPredictor,
    hardness_loss,
    load_predictor,
    save_predictor,
    train_hardness_predictor,
)
from .maps import ATTRIBUTIONS
from .ranking import Hard, Ranking, hardest
from .result import Difficulty, InsecurityResult, Pair, Segment
from .scores import DIFFICULTIES, classification_score, normalised_entropy

__all__ = [
    "ATTRIBUTIONS",
    "DIFFICULTIES",
    "Analysis",
    "Difficulty",
    "Hard",
    "HardnessPredictor",
    "InsecurityResult",
    "Pair",
    "Ranking",
    "Segment",
    "analyse",
    "average",
    "classification_score",
    "common_objects",
    "common_parts",
    "hardest",
    "hardness_loss",
    "insecurities",
    "load_predictor",
    "mask_to_input",
    "normalised_entropy",
    "object_scores",
    "object_similarity",
    "pair_set",
    "part_divergence",
    "part_scores",
    "points_to_input",
    "prepare_maps",
    "save_predictor",
    "top_fraction",
    "train_hardness_predictor",
]
