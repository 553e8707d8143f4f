"""Shared fixtures of the x-feature tests: the synthetic problem, its CNN and its XNN (trained
once per session: a few seconds)."""

from __future__ import annotations

import pytest
from xf_synthetic import PREPROCESSING, Synthetic, make_images, trained_bundle

from xai_widgets import xfeatures


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Synthetic:
    bundle = trained_bundle()
    images, present, boxes = make_images(300, seed=7)
    inputs = PREPROCESSING.normalise(images)
    data = xfeatures.FeatureSet.extract(bundle, list(inputs), cls="patterns",
                                        cache_dir=tmp_path_factory.mktemp("features"),
                                        positives=present.any(dim=1).tolist())
    return Synthetic(bundle, inputs, present, boxes, data)


#: settings of the synthetic XNN: small hidden layers, few epochs and a larger learning rate
#: keep it to seconds (the rest are the original defaults: the log penalty, the pull-away term
#: along the images, the re-tuning loop)
SYNTHETIC_XNN = {"n_features": 3, "hidden": (32, 8), "pretrain_epochs": 5, "epochs": 40,
                 "lr": 1e-2, "retune_rounds": 5}


@pytest.fixture(scope="session")
def synthetic_xnn(synthetic: Synthetic) -> xfeatures.XNN:
    return xfeatures.train(synthetic.data, seed=2, **SYNTHETIC_XNN)
