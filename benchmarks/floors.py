"""Floors: the bare passes a method cannot avoid, written directly against torch.

``fb``      forward with autograd + backward to the input (saliency, input × gradient,
            guided backprop, DeconvNet: any rule changes the backward, not its size);
``f_grad``  forward with autograd + backward down to the layer (the Grad-CAM family);
``f``       one forward without autograd (CAM);
and, on a graph built once and kept (:class:`BuiltGraph`), the backward passes a switch on a
warm trace cannot avoid: logits -> layer or input for a new class, layer -> earlier layer or
input for the missing part of a backward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .workload import Workload

FB, F_GRAD, F = "fb", "f_grad", "f"


def one_hot(logits: torch.Tensor, targets: Sequence[int]) -> torch.Tensor:
    """The seed of ``Σ_i logits[i, targets[i]]``."""
    index = torch.tensor(targets, device=logits.device)[:, None]
    return torch.zeros_like(logits).scatter_(1, index, 1.0)


def _capture(work: Workload, layers: Sequence[str],
             x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits of the model on ``x`` and the outputs of ``layers`` (hooks removed afterwards).

    An output that the model changes in place later (DenseNet's ``features`` before its
    ``F.relu(inplace=True)``) is kept and the model goes on with a copy, so that a backward
    to it goes through what follows it, as with a trace.
    """
    outputs: dict[nn.Module, torch.Tensor] = {}
    modules = [work.module(name) for name in layers]
    copied = {work.module(name) for name in layers if work.bundle.layers[name].mutated_later}

    def keep(module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor | None:
        outputs[module] = output
        return output.clone() if module in copied else None

    handles = [module.register_forward_hook(keep) for module in modules]
    try:
        logits = work.model(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, [outputs[module] for module in modules]


def forward_backward(work: Workload) -> Callable[[], object]:
    """``fb``: forward with autograd, backward to the input."""
    def run() -> object:
        x = work.inputs.detach().requires_grad_()
        logits = work.model(x)
        return torch.autograd.grad(logits, x, one_hot(logits, work.targets))
    return run


def forward_to_layer(work: Workload) -> Callable[[], object]:
    """``f_grad``: forward with autograd, backward down to the default layer."""
    def run() -> object:
        logits, (activation,) = _capture(work, [work.layer], work.inputs)
        return torch.autograd.grad(logits, activation, one_hot(logits, work.targets))
    return run


def forward(work: Workload) -> Callable[[], object]:
    """``f``: one forward pass without autograd."""
    def run() -> object:
        with torch.inference_mode():
            return work.model(work.inputs)
    return run


class BuiltGraph:
    """One forward with autograd on the workload, its graph kept, the default and previous
    layers' outputs recorded: the backward passes a switch on a warm trace cannot avoid."""

    def __init__(self, work: Workload) -> None:
        self.work = work
        self.input = work.inputs.detach().requires_grad_()
        self.logits, (self.layer, self.previous) = _capture(
            work, [work.layer, work.previous], self.input)
        (self.layer_gradient,) = torch.autograd.grad(
            self.logits, self.layer, one_hot(self.logits, work.targets), retain_graph=True)

    def _grad(self, root: torch.Tensor, tensor: torch.Tensor, seed: torch.Tensor) -> object:
        return torch.autograd.grad(root, tensor, seed, retain_graph=True)

    def class_to_layer(self) -> object:
        """A new class at the default layer: logits -> layer."""
        return self._grad(self.logits, self.layer, one_hot(self.logits, self.work.targets))

    def class_to_input(self) -> object:
        """A new class at the input: logits -> input."""
        return self._grad(self.logits, self.input, one_hot(self.logits, self.work.targets))

    def layer_to_previous(self) -> object:
        """The missing backward of a layer switch: default layer -> previous stage."""
        return self._grad(self.layer, self.previous, self.layer_gradient)

    def layer_to_input(self) -> object:
        """The missing backward of saliency after Grad-CAM: default layer -> input."""
        return self._grad(self.layer, self.input, self.layer_gradient)
