"""Shared fixtures: tiny models, the reference networks of kernels/, thread settings."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
KERNEL_CARDS = ROOT / "kernels"

# Two pytest-xdist workers share two cores: one thread each avoids oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def _load_by_path(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


#: kernels/reference_nets.py (TinyNet in torch, and its NumPy reference), loaded by path
reference_nets = _load_by_path("reference_nets", KERNEL_CARDS / "reference_nets.py")


def load_reference(method: str) -> dict[str, np.ndarray]:
    """The arrays of ``kernels/<method>/reference.npz``."""
    return reference_nets.load(KERNEL_CARDS / method / "reference.npz")


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
