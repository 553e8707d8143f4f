"""What every benchmark runs on: one model, one random batch, one class per image."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

import xai_widgets as xw

#: The layer a "layer switch" moves to from the default one: the end of the previous stage.
PREVIOUS_STAGE = {
    "resnet18": "layer3",
    "resnet50": "layer3",
    "vgg16": "features.23",
    "densenet121": "features.denseblock3",
}

SIZE = 224


@dataclass
class Workload:
    """A torchvision classifier with random weights (eval mode) and a random batch.

    ``targets`` are fixed classes for one-shot calls; :meth:`fresh_targets` yields classes
    never asked before, for switches that must not hit a cache.
    """

    name: str
    bundle: xw.ModelBundle
    inputs: torch.Tensor
    targets: tuple[int, ...]
    layer: str
    previous: str
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _copies: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def model(self) -> nn.Module:
        return self.bundle.model

    @property
    def batch(self) -> int:
        return len(self.targets)

    def module(self, name: str, model: nn.Module | None = None) -> nn.Module:
        """The submodule ``name`` of the model (or of one of its copies)."""
        return dict((model or self.model).named_modules())[name]

    def fresh_targets(self) -> tuple[int, ...]:
        """One class per image, a combination not returned before."""
        step = next(self._counter)
        classes = self.bundle.layers.num_classes
        return tuple((self.targets[i] + step * (i + 1)) % classes for i in range(self.batch))

    def private_copy(self, key: str) -> nn.Module:
        """A deep copy of the model for a peer that leaves hooks on it or swaps its modules,
        so that nothing it does can touch the model the others use."""
        if key not in self._copies:
            self._copies[key] = copy.deepcopy(self.model)
        return self._copies[key]


def load(name: str, batch: int, seed: int = 0) -> Workload:
    """``name`` from torchvision with ``weights=None``, a ``(batch, 3, 224, 224)`` input."""
    torch.manual_seed(seed)
    bundle = xw.load_model(name, weights=None)
    inputs = torch.randn(batch, 3, SIZE, SIZE)
    classes = bundle.layers.num_classes
    targets = tuple(int(t) for t in torch.randint(classes, (batch,)))
    layer = bundle.layers.resolve(None, bundle.model)  # the default layer
    return Workload(name, bundle, inputs, targets, layer, previous_stage(bundle, name, layer))


def previous_stage(bundle: xw.ModelBundle, name: str, layer: str) -> str:
    """:data:`PREVIOUS_STAGE`, else the last candidate layer before ``layer`` with a larger
    map whose output is not changed in place later."""
    if name in PREVIOUS_STAGE:
        return PREVIOUS_STAGE[name]
    catalog = bundle.layers
    default = catalog[layer]
    larger = [info for info in catalog if info.order < default.order and not info.mutated_later
              and info.shape[1] > default.shape[1]]
    return larger[-1].name if larger else default.name
