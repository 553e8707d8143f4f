"""X-features: explain one class of a CNN by a few learned concepts (XNN / SRAE).

Qi, Khorram, Li. "Embedding Deep Networks into Visual Explanations." arXiv:1709.05360.

>>> from xai_widgets import xfeatures
>>> data = xfeatures.FeatureSet.extract(bundle, "photos/", cls="espresso")   # cached on disk
>>> xnn = xfeatures.train(data, n_features=5, seed=0)
>>> xnn.faithfulness()            # R², mean |ŷ − y| on held-out images
>>> xnn.explain(image)            # one c-EB map per x-feature, ordered by contribution

Modules: :mod:`.features` (Z and y of every image, the disk cache), :mod:`.srae` (the network,
its loss and training schedule), :mod:`.xnn` (the combined model and its results),
:mod:`.maps` (the batched c-EB maps), :mod:`.demo` (an offline data set).
"""

from __future__ import annotations

from .errors import XFeatureDataError, XFeatureFileError
from .features import FeatureSet, default_cache_dir
from .srae import SRAE, SRAEConfig, accept, pull_away, reconstruction_loss
from .xnn import (
    XNN,
    CombinedModel,
    Contributions,
    Faithfulness,
    TrainSetDiagnostics,
    XFeatureMaps,
    load,
    train,
)

__all__ = [
    "SRAE",
    "XNN",
    "CombinedModel",
    "Contributions",
    "Faithfulness",
    "FeatureSet",
    "SRAEConfig",
    "TrainSetDiagnostics",
    "XFeatureDataError",
    "XFeatureFileError",
    "XFeatureMaps",
    "accept",
    "default_cache_dir",
    "load",
    "pull_away",
    "reconstruction_loss",
    "train",
]
