"""The speed engine: one forward pass, cached partial backward passes (DESIGN rule 3).

A :class:`Trace` runs the model once on a batch, under one backward rule, records the logits
and the activations of the candidate layers, and keeps the graph. Gradients are asked for by
``(targets, tensor)`` and cached:

* a backward goes only as deep as the tensors asked for (``torch.autograd.grad`` only runs
  the part of the graph between the root and those tensors);
* it starts from the deepest cached gradient that every path crosses (see
  :mod:`.autograd_graph`), so saliency after Grad-CAM at ``layer4`` costs only
  ``layer4 -> input``;
* on the way it also keeps the gradients of the recorded layers that every path crosses, so
  a later switch to one of those layers costs nothing;
* on a global-average-pooling head the gradient at the pooled layer is known in closed form
  (:mod:`.heads`) and costs no backward at all.

A :class:`TraceSet` holds the traces of one batch, one per rule, built when first needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from . import rules
from .autograd_graph import Dominators, single_output
from .errors import ModelError
from .heads import Head, find_head
from .layers import run_model
from .models import ModelBundle
from .scope import ForwardHook, eval_mode, forward_hooks, model_lock

#: Name under which the model input is asked for (never a module name).
INPUT = "<input>"

Targets = tuple[int, ...]


class Trace:
    """One forward pass of ``inputs`` through ``bundle.model`` under ``rule``.

    ``record``: candidate layers whose activations are kept (by reference, no copy);
    ``copy``: those among them whose output is changed in place later in the forward pass,
    copied at once so that their values and gradients stay those of the layer.
    ``with_graph=False`` runs without autograd (for methods that need no gradient).
    """

    def __init__(self, bundle: ModelBundle, inputs: torch.Tensor, rule: rules.Rule = "gradient",
                 record: Iterable[str] = (), copy: Iterable[str] = (),
                 with_graph: bool = True, retain_graph: bool = True) -> None:
        self.rule = rule
        self.with_graph = with_graph
        #: False for a trace that serves one backward (an iterative kernel's chunk): the
        #: graph's buffers are freed as the backward goes, which is measurably faster
        self.retain_graph = retain_graph
        model = bundle.model
        modules = dict(model.named_modules())
        copied = set(copy)
        recorded: dict[str, tuple[torch.Tensor, int]] = {}
        linear: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

        def recorder(name: str) -> ForwardHook:
            def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
                recorded[name] = (output, output._version)
                return output.clone() if name in copied else None

            return hook

        def linear_hook(module: nn.Module, args: Any, output: Any) -> None:
            assert isinstance(module, nn.Linear)
            linear[:] = [(args[0], output, module.weight)]

        hooks: dict[nn.Module, ForwardHook] = {modules[name]: recorder(name) for name in record}
        if rule == "gradient":
            hooks.update({m: linear_hook for m in modules.values()
                          if isinstance(m, nn.Linear) and m not in hooks})
        parameter = next(model.parameters(), None)
        x = inputs.detach().to(device=bundle.device,
                               dtype=parameter.dtype if parameter is not None else None)
        x = x.clone().requires_grad_(with_graph)
        grad_mode = torch.enable_grad() if with_graph else torch.no_grad()
        with model_lock(model), grad_mode, eval_mode(model), forward_hooks(hooks), \
                rules.applied(rule):
            logits = run_model(model, x)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise ModelError("the model must return logits (N, classes); wrap it in a module "
                             "whose forward returns them")
        if not torch.isfinite(logits).all():
            raise ModelError("the model's output contains NaN or infinite values for this "
                             "input; check the input's normalisation and the model's weights")
        self.input = x
        self.logits = logits
        #: activations whose value is that of the layer (not changed in place afterwards)
        self.activations = {name: tensor for name, (tensor, version) in recorded.items()
                            if tensor._version == version}
        self._last_linear = linear[0] if linear else None
        self._head: Head | bool | None = False  # False: not looked for yet
        self._dominators: Dominators | None = None
        self._gradients: dict[tuple[Targets, str], torch.Tensor] = {}

    # ------------------------------------------------------------------ values

    def tensor(self, name: str) -> torch.Tensor:
        """The recorded tensor ``name`` (a layer, or :data:`INPUT`), still in the graph."""
        return self.input if name == INPUT else self.activations[name]

    def activation(self, name: str) -> torch.Tensor:
        """Detached activations of layer ``name``: ``(N, C, h, w)``."""
        return self.tensor(name).detach()

    def head(self) -> Head | None:
        """The global-average-pooling head, if the model ends in one (looked for once)."""
        if self._head is False:
            self._head = find_head(self.logits.detach(), self.activations, self._last_linear)
        return self._head  # type: ignore[return-value]

    # ------------------------------------------------------------------ gradients

    def gradient(self, targets: Targets, name: str) -> torch.Tensor:
        """``∂ Σ_i logits[i, targets[i]] / ∂ tensor`` under this trace's rule, detached."""
        return self.gradients(targets, [name])[0]

    def gradients(self, targets: Targets, names: Sequence[str]) -> list[torch.Tensor]:
        """Gradients of the target logits at several tensors, each computed at most once."""
        if not self.with_graph:
            raise RuntimeError("this trace was recorded without a graph")
        missing = [n for n in dict.fromkeys(names) if (targets, n) not in self._gradients]
        self._closed_form(targets, missing)
        missing = [n for n in missing if (targets, n) not in self._gradients]
        if missing:
            self._backward(targets, missing)
        return [self._gradients[(targets, n)] for n in names]

    def _closed_form(self, targets: Targets, names: list[str]) -> None:
        if self.rule != "gradient":
            return
        head = self.head()
        if head is not None and head.layer in names:
            index = torch.tensor(targets, device=self.logits.device)
            self._gradients[(targets, head.layer)] = head.gradient(
                self.activation(head.layer), index)

    def _backward(self, targets: Targets, names: list[str]) -> None:
        wanted = [self.tensor(n) for n in names]
        if self._dominators is None:
            self._dominators = Dominators(self.logits)
        chains = [self._dominators.chain(w) for w in wanted]
        crossed = set.intersection(*(set(c) for c in chains))
        nearness = {node: rank for rank, node in enumerate(chains[0])}

        def cut(name: str) -> int | None:
            """Rank of layer ``name`` on the way up from the wanted tensors, if every path
            from the root to them crosses it (smaller = nearer to them)."""
            tensor = self.activations.get(name)
            if tensor is None or tensor.grad_fn not in crossed or not single_output(tensor):
                return None
            return nearness[tensor.grad_fn]

        starts = {n: r for (t, n) in self._gradients if t == targets
                  and (r := cut(n)) is not None and n not in names}
        start = min(starts, key=starts.__getitem__, default=None)
        if start is None:
            root = self.logits
            seed = torch.zeros_like(self.logits)
            seed[torch.arange(len(targets)), torch.tensor(targets)] = 1.0
        else:
            root, seed = self.tensor(start), self._gradients[(targets, start)]
        # recorded layers crossed between the start and the wanted tensors: their gradients
        # come for free on the way, and make a later switch to them cost nothing
        limit = len(nearness) if start is None else starts[start]
        on_the_way = [n for n in self.activations
                      if n not in names and (targets, n) not in self._gradients
                      and (r := cut(n)) is not None and r < limit]
        tensors = [*wanted, *(self.activations[n] for n in on_the_way)]
        grads = torch.autograd.grad(root, tensors, seed, retain_graph=self.retain_graph,
                                    allow_unused=True)
        for name, tensor, grad in zip([*names, *on_the_way], tensors, grads, strict=True):
            self._gradients[(targets, name)] = \
                torch.zeros_like(tensor) if grad is None else grad.detach()

    @property
    def cached_gradients(self) -> int:
        return len(self._gradients)


class TraceSet:
    """The traces of one batch through one model, one per rule, built on first use.

    ``layers``: the layers the caller will ask for; they are recorded (and copied where the
    model changes them in place) in every trace. Under the gradient rule every candidate layer
    is recorded besides, so a layer switch needs no new forward pass.
    """

    def __init__(self, bundle: ModelBundle, inputs: torch.Tensor, layers: Iterable[str] = (),
                 with_graph: bool = True, one_shot: bool = False) -> None:
        self.bundle = bundle
        self.inputs = inputs
        self.with_graph = with_graph
        #: the traces serve one backward each (explain(), a chunk of an iterative kernel): only the
        #: layers asked for are recorded and the graph is not retained
        self.one_shot = one_shot
        self._layers = set(layers)
        self._traces: dict[rules.Rule, Trace] = {}
        self.forward_passes = 0

    def get(self, rule: rules.Rule = "gradient", layers: Iterable[str] = ()) -> Trace:
        """The trace under ``rule`` that has recorded ``layers`` (built or rebuilt if needed)."""
        wanted = set(layers)
        trace = self._traces.get(rule)
        if trace is not None and wanted <= trace.activations.keys():
            return trace
        self._layers |= wanted
        catalog = self.bundle.layers
        record = set(self._layers) | {n for n in (catalog.default, catalog.pooled) if n}
        if rule == "gradient" and self.with_graph and not self.one_shot:
            record |= {info.name for info in catalog if not info.mutated_later}
        copy = {info.name for info in catalog if info.mutated_later and info.name in record}
        trace = Trace(self.bundle, self.inputs, rule, record=record, copy=copy,
                      with_graph=self.with_graph, retain_graph=not self.one_shot)
        self.forward_passes += 1
        self._traces[rule] = trace
        return trace

    def any(self, rule: rules.Rule = "gradient") -> Trace:
        """An existing trace (any rule: forward values agree), else a new one under ``rule``."""
        return next(iter(self._traces.values()), None) or self.get(rule)

    @property
    def logits(self) -> torch.Tensor:
        return self.any().logits.detach()
