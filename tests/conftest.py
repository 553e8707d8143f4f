"""Shared fixtures: the embedded model, sample photos, seeding and thread settings."""

from __future__ import annotations

import os

import pytest
import torch

# Two pytest-xdist workers share two cores: one thread each avoids oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def embedded():
    """The embedded EfficientNet-Lite0 bundle with its real ImageNet weights (shared)."""
    import xai_widgets as xw

    return xw.load_model()


@pytest.fixture(scope="session")
def photos():
    import xai_widgets as xw

    return xw.sample_images()
