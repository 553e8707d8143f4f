"""Faithfulness and localisation metrics of maps, for one explanation or a whole folder.

>>> import xai_widgets as xw
>>> from xai_widgets import metrics
>>> bundle, photo = xw.load_model(), xw.sample_images()["chelsea"]
>>> e = xw.explain(bundle, photo, "grad_cam")
>>> result = metrics.deletion_insertion(e, photo)      # RISE's protocol, batched
>>> result.areas()                                     # {'deletion': [...], 'insertion': [...]}

Every metric takes an Explanation and its images, or a model, images and raw maps; the
forward passes run in chunks under ``torch.inference_mode()`` with the model in eval mode,
and never change the model. Iterative ones take ``progress(fraction, preview)``, which may
raise :class:`Cancelled`.

=======================  =========================================================
deletion_insertion       deletion and insertion curves and areas (Petsiuk et al. 2018)
tradeoff                 amount of activation vs. re-identification (Kwon et al. 2021)
pointing_game            maximum point on the object (Zhang et al. 2016/2018)
energy_pointing_game     share of the map's energy on the object (Wang et al. 2020)
sanity_check             cascading model randomisation (Adebayo et al. 2018)
evaluate_folder          all of these over a folder: resumable, shardable, locked
summarize                mean and 95% CI per method × metric of results files
area_table               deletion/insertion areas of a grid of maps (Compare.metrics)
=======================  =========================================================

:data:`REGISTRY` holds a :class:`MetricSpec` per metric (name, label, paper, the numbers it
writes and which way each is better, whether it needs boxes or labels, its cost, and what it
measures per image of a folder): the folder evaluation, the summary, the command line and
the views are built from it. :class:`EvaluationSettings` is what a folder evaluation computes.
"""

from __future__ import annotations

from ..errors import MetricError, MetricWarning
from ..kernels.spec import Cancelled, Progress
from .deletion import (
    Curve,
    DeletionInsertion,
    deletion,
    deletion_insertion,
    gaussian_blur,
    insertion,
    rank_pixels,
    rise_blur,
)
from .folder import FolderRun, evaluate_folder, list_images, model_digest
from .pointing import Pointing, box_to_input, boxes_to_masks, energy_pointing_game, pointing_game
from .registry import REGISTRY, columns, get_metric
from .sanity import Sanity, sanity_check
from .settings import EvaluationSettings
from .similarity import hog, spearman, ssim
from .spec import Column, MetricSpec
from .summary import Row, Summary, summarize, summarize_records, wilson
from .table import AreaRow, AreaTable, area_table
from .tradeoff import Tradeoff, tradeoff, tradeoff_figure

__all__ = [
    "REGISTRY",
    "AreaRow",
    "AreaTable",
    "Cancelled",
    "Column",
    "Curve",
    "DeletionInsertion",
    "EvaluationSettings",
    "FolderRun",
    "MetricError",
    "MetricSpec",
    "MetricWarning",
    "Pointing",
    "Progress",
    "Row",
    "Sanity",
    "Summary",
    "Tradeoff",
    "area_table",
    "box_to_input",
    "boxes_to_masks",
    "columns",
    "deletion",
    "deletion_insertion",
    "energy_pointing_game",
    "evaluate_folder",
    "gaussian_blur",
    "get_metric",
    "hog",
    "insertion",
    "list_images",
    "model_digest",
    "pointing_game",
    "rank_pixels",
    "rise_blur",
    "sanity_check",
    "spearman",
    "ssim",
    "summarize",
    "summarize_records",
    "tradeoff",
    "tradeoff_figure",
    "wilson",
]
