"""Candidate layers of any model, found by one dry run.

A *candidate layer* is a submodule whose output is a spatial map ``(N, C, h, w)`` with more
than one cell, and that runs exactly once per forward pass. Modules that return the very same
tensor (``layer4`` and ``layer4.2`` of a ResNet) are one candidate under its shortest name,
the others being aliases. A module whose output is later changed in place (a BatchNorm
followed by an in-place ReLU, DenseNet's ``features`` followed by ``F.relu(inplace=True)``)
is marked ``mutated_later``: a trace must copy that output to keep its value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import LayerError, ModelError, XaiError, did_you_mean
from .heads import find_head
from .scope import eval_mode, forward_hooks, model_lock

_NOT_A_DEFAULT = (
    nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten, nn.Upsample,
)


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of the model's parameters (its inputs are cast to it), if any."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return None


def run_model(model: nn.Module, inputs: torch.Tensor) -> Any:
    """``model(inputs)``; a model that fails on the input (a fixed input size, a dtype or
    device it does not take) raises a :class:`ModelError` that says what it was given."""
    try:
        return model(inputs)
    except XaiError:  # a backward rule refusing an op says so itself
        raise
    except torch.OutOfMemoryError:  # the caller knows what to make smaller
        raise
    except (RuntimeError, ValueError, TypeError) as exc:
        if "can't allocate memory" in str(exc) or "out of memory" in str(exc):
            raise
        shape = "×".join(map(str, inputs.shape[1:]))
        raise ModelError(
            f"the model failed on an input of {shape} ({inputs.dtype}, {inputs.device}): "
            f"{str(exc).splitlines()[0]}. If it takes only one input size, give images of "
            "that size (a float tensor (N, 3, H, W) is used as it is) or a ModelBundle whose "
            "Preprocessing(resize=..., crop=(H, W)) makes it") from exc


@dataclass(frozen=True)
class LayerInfo:
    """One candidate layer: its name, module type, output shape ``(C, h, w)`` at the
    bundle's input size, rank in forward order, other names, whether its output is
    changed in place after the module returns, and whether it is a *main* layer (a block a
    person would pick: at most two levels deep, not an identity, dropout or pooling)."""

    name: str
    kind: str
    shape: tuple[int, int, int]
    order: int
    aliases: tuple[str, ...] = ()
    mutated_later: bool = False
    main: bool = True

    def __str__(self) -> str:
        channels, height, width = self.shape
        return f"{self.name} ({self.kind}, {channels}×{height}×{width})"


class LayerCatalog:
    """The candidate layers of one model, the default one, and name resolution."""

    def __init__(self, candidates: list[LayerInfo], default: str | None, num_classes: int,
                 refused: dict[str, str], pooled: str | None = None) -> None:
        self.candidates = candidates
        #: the last spatial layer before the pooling (``None``: the model has no spatial layer)
        self.default = default
        #: the layer a global-average-pooling head reads (where CAM is defined), if any
        self.pooled = pooled
        self.num_classes = num_classes
        self._refused = refused
        self._by_name = {info.name: info for info in candidates}
        self._canonical = {alias: info.name for info in candidates for alias in info.aliases}
        self._canonical.update({info.name: info.name for info in candidates})

    @classmethod
    def from_model(cls, model: nn.Module, input_hw: tuple[int, int],
                   device: torch.device | str = "cpu") -> LayerCatalog:
        """Run one forward pass on a random ``(1, 3, *input_hw)`` batch and list the layers."""
        names = {module: name for name, module in model.named_modules() if name}
        calls: dict[str, list[tuple[Any, int]]] = {}
        linear: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

        def record(module: nn.Module, args: Any, output: Any) -> None:
            version = output._version if isinstance(output, torch.Tensor) else 0
            calls.setdefault(names[module], []).append((output, version))
            if isinstance(module, nn.Linear):
                linear[:] = [(args[0], output, module.weight)]

        generator = torch.Generator().manual_seed(0)
        dummy = torch.randn(1, 3, *input_hw, generator=generator).to(
            device=device, dtype=model_dtype(model))
        with model_lock(model), torch.no_grad(), eval_mode(model), \
                forward_hooks({module: record for module in names}):
            logits = run_model(model, dummy)
        if not (isinstance(logits, torch.Tensor) and logits.ndim == 2):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else \
                type(logits).__name__
            raise ModelError(f"the model returns {shape}; a classifier must return logits "
                             "(N, classes): wrap it in a module whose forward returns them")
        catalog = cls._from_calls(calls, names, int(logits.shape[1]))
        outputs = {info.name: calls[info.name][-1][0] for info in catalog.candidates}
        head = find_head(logits, outputs, linear[0] if linear else None)
        catalog.pooled = None if head is None else head.layer
        return catalog

    @classmethod
    def _from_calls(cls, calls: dict[str, list[tuple[Any, int]]],
                    names: dict[nn.Module, str], num_classes: int) -> LayerCatalog:
        kinds = {name: type(module).__name__ for module, name in names.items()}
        modules = {name: module for module, name in names.items()}
        refused: dict[str, str] = {}
        groups: dict[tuple[int, int], list[str]] = {}
        outputs: dict[tuple[int, int], torch.Tensor] = {}
        for name, made in calls.items():
            output, version = made[-1]
            if len(made) > 1:
                refused[name] = (f"module {name!r} runs {len(made)} times per forward pass, so "
                                 "its output is ambiguous; pick the block that contains it")
            elif not isinstance(output, torch.Tensor) or output.ndim != 4 \
                    or not output.is_floating_point():
                refused[name] = f"module {name!r} does not output a spatial map (N, C, h, w)"
            elif output.shape[-1] * output.shape[-2] < 2:
                refused[name] = (f"module {name!r} outputs a single cell "
                                 f"{tuple(output.shape)}: there is no map to show")
            else:
                key = (id(output), version)
                groups.setdefault(key, []).append(name)
                outputs[key] = output
        for name in set(names.values()) - set(calls):
            refused[name] = f"module {name!r} does not run in the forward pass"

        candidates = []
        for order, (key, members) in enumerate(groups.items()):
            canonical = min(members, key=lambda n: (n.count("."), members.index(n)))
            output = outputs[key]
            candidates.append(LayerInfo(
                name=canonical,
                kind=kinds[canonical],
                shape=(int(output.shape[1]), int(output.shape[2]), int(output.shape[3])),
                order=order,
                aliases=tuple(m for m in members if m != canonical),
                mutated_later=output._version != key[1],
                main=canonical.count(".") <= 1 and not isinstance(modules[canonical],
                                                                  _NOT_A_DEFAULT),
            ))
        usable = [c for c in candidates if not isinstance(modules[c.name], _NOT_A_DEFAULT)]
        default = (usable or candidates)[-1].name if candidates else None
        return cls(candidates, default, num_classes, refused)

    @property
    def names(self) -> list[str]:
        return [info.name for info in self.candidates]

    @property
    def main(self) -> list[LayerInfo]:
        """The layers a person would pick (blocks; the default and the pooled layer always),
        in forward order; the menus offer the others behind "all layers"."""
        return [info for info in self.candidates
                if info.main or info.name in (self.default, self.pooled)]

    def __getitem__(self, name: str) -> LayerInfo:
        return self._by_name[self.resolve(name)]

    def __iter__(self) -> Any:
        return iter(self.candidates)

    def __len__(self) -> int:
        return len(self.candidates)

    def resolve(self, layer: str | nn.Module | None, model: nn.Module | None = None) -> str:
        """The canonical name of ``layer`` (a name, an alias, a module of ``model``, or
        ``None`` for the default); a clear :class:`LayerError` otherwise."""
        if not self.candidates:
            raise ModelError("the model has no layer with a spatial output (N, C, h, w); "
                             "layer methods need a convolutional model (methods on the input, "
                             "such as saliency, still apply)")
        if layer is None:
            return self.default  # type: ignore[return-value]
        if isinstance(layer, nn.Module):
            found = next((n for n, m in (model.named_modules() if model else []) if m is layer),
                         None)
            if found is None:
                raise LayerError("that module is not part of this model; pass a layer name "
                                 f"such as {self.default!r}")
            layer = found
        if not isinstance(layer, str):
            raise LayerError(f"a layer is given by name (str) or module, not by "
                             f"{type(layer).__name__}; e.g. {self.default!r}")
        if layer in self._canonical:
            return self._canonical[layer]
        if layer in self._refused:
            raise LayerError(f"{self._refused[layer]}; candidate layers include "
                             f"{self._suggestions()}")
        hint = did_you_mean(layer, [*self._canonical, *self._refused])
        raise LayerError(f"unknown layer {layer!r}; "
                         f"{hint or 'candidate layers include ' + self._suggestions()}"
                         " (xai_widgets.list_layers(model) lists them all)")

    def _suggestions(self) -> str:
        last = [info.name for info in self.candidates[-3:]]
        return ", ".join(repr(n) for n in last) + f" (default {self.default!r})"

    def __repr__(self) -> str:
        lines = [f"{len(self.candidates)} candidate layers (default {self.default!r}):"]
        lines += [f"  {info}{' <- default' if info.name == self.default else ''}"
                  for info in self.candidates]
        return "\n".join(lines)
