"""Fixtures for the widget tests: a small real-architecture bundle, and test methods."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torchvision
from probe_method import CALLS, probe_spec

import xai_widgets as xw
from xai_widgets.kernels import REGISTRY
from xai_widgets.kernels.spec import MethodSpec


@pytest.fixture
def probes() -> Iterator[tuple[MethodSpec, MethodSpec]]:
    quick, slow = probe_spec("pass"), probe_spec("iterative")
    REGISTRY[quick.name], REGISTRY[slow.name] = quick, slow
    CALLS.clear()
    yield quick, slow
    del REGISTRY[quick.name], REGISTRY[slow.name]


@pytest.fixture(scope="session")
def small() -> xw.ModelBundle:
    """ResNet-18 with random weights at 64×64: real architecture, quick passes."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    preprocessing = xw.Preprocessing(resize=72, crop=(64, 64))
    return xw.ModelBundle(model, preprocessing, [f"class{i}" for i in range(10)], "small")
