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
evaluate_folder          all of these over a folder: resumable, shardable
summarize                mean ± 95% CI per method × metric of results files
area_table               deletion/insertion areas of a grid of maps (Compare.metrics)
=======================  =========================================================
"""

from __future__ import annotations

from ..kernels.spec import Cancelled, Progress
from .deletion import (
    Curve,
    DeletionInsertion,
    deletion,
    deletion_insertion,
    gaussian_blur,
    insertion,
    rank_pixels,
)
from .folder import METRICS, FolderRun, evaluate_folder, list_images
from .pointing import Pointing, box_to_input, boxes_to_masks, energy_pointing_game, pointing_game
from .sanity import Sanity, sanity_check
from .similarity import hog, spearman, ssim
from .subject import MetricError
from .summary import Row, Summary, summarize, summarize_records
from .table import AreaRow, AreaTable, area_table
from .tradeoff import Tradeoff, tradeoff, tradeoff_figure

__all__ = [
    "METRICS",
    "AreaRow",
    "AreaTable",
    "Cancelled",
    "Curve",
    "DeletionInsertion",
    "FolderRun",
    "MetricError",
    "Pointing",
    "Progress",
    "Row",
    "Sanity",
    "Summary",
    "Tradeoff",
    "area_table",
    "box_to_input",
    "boxes_to_masks",
    "deletion",
    "deletion_insertion",
    "energy_pointing_game",
    "evaluate_folder",
    "gaussian_blur",
    "hog",
    "insertion",
    "list_images",
    "pointing_game",
    "rank_pixels",
    "sanity_check",
    "spearman",
    "ssim",
    "summarize",
    "summarize_records",
    "tradeoff",
    "tradeoff_figure",
]
