"""The one path from a request to an :class:`~xai_widgets.explanation.Explanation`.

``explain()``, the Explorer's session, Compare, the metrics, the folder evaluation, the CLI
and the benchmarks all go through :class:`Request`: it checks what the caller asked for at
the boundary (model, images, method parameters, layer by the method's layer policy, targets)
and runs the method's kernel on a :class:`~xai_widgets.trace.TraceSet`, which a caller that
explains the same image again (the Explorer) keeps and passes back, so that nothing is paid
twice.

Bare ``nn.Module`` s get one :class:`~xai_widgets.models.ModelBundle` each, kept while the
module lives and rebuilt when its structure changes (:func:`bundle_for`): its layer catalogue
(one dry run) is not redone on every call. The catalogue's dry run uses the size of the
first input the model is explained on, so a network that takes only one input size (a
CIFAR-style ``Linear`` after ``flatten``) works when given inputs of that size.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import EmptyMapWarning
from .explanation import Explanation
from .images import PreparedBatch
from .kernels import get_method
from .kernels.spec import KernelContext, MethodSpec, Progress
from .models import ModelBundle
from .scope import model_lock
from .targets import resolve_targets
from .trace import Targets, TraceSet

_BUNDLES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], ModelBundle]] = \
    weakref.WeakKeyDictionary()


def _structure(model: nn.Module) -> tuple[Any, ...]:
    """What a bundle's catalogue depends on: the modules by name and type."""
    return tuple((name, type(module)) for name, module in model.named_modules())


def bundle_for(model: ModelBundle | nn.Module) -> ModelBundle:
    """``model``'s bundle: itself, or the one bundle of a bare module (cached per module,
    rebuilt when a submodule is added, removed or replaced)."""
    if isinstance(model, ModelBundle) or not isinstance(model, nn.Module):
        return ModelBundle.wrap(model)
    structure = _structure(model)
    cached = _BUNDLES.get(model)
    if cached is not None and cached[0] == structure:
        return cached[1]
    bundle = ModelBundle.wrap(model)
    _BUNDLES[model] = (structure, bundle)
    return bundle


def empty_map_message(explanation: Explanation) -> str:
    """What an all-zero map means, for a warning or a status line."""
    images = [explanation.names[i] for i in explanation.all_zero.nonzero().flatten().tolist()]
    return (f"{explanation.method.label} gives an all-zero map for "
            f"{', '.join(images[:5])}{' …' if len(images) > 5 else ''}: it shows nothing. "
            "Typical causes: the class's head weights are zero, the model ignores its input, "
            "a baseline equal to the input, or a zero initialisation; try another class, "
            "layer or method")


@dataclass
class Request:
    """A checked request: a method on one batch's traces, one target per image, the layer
    the kernel gets (``None``: none, or the method's own choice) and validated parameters.

    Build it with :meth:`make` (from what a user typed) or directly from values already
    checked (the Explorer's resolved selection); :meth:`run` computes the explanation.
    """

    bundle: ModelBundle
    batch: PreparedBatch
    traces: TraceSet
    method: MethodSpec
    targets: Targets
    layer: str | None
    params: dict[str, Any]

    @classmethod
    def make(cls, model: ModelBundle | nn.Module, images: Any,
             method: str | MethodSpec = "grad_cam", target: Any = "top1",
             layer: str | nn.Module | None = None, params: Mapping[str, Any] | None = None,
             batch: PreparedBatch | None = None, traces: TraceSet | None = None) -> Request:
        """Check everything at the boundary: ``images`` are prepared (unless ``batch`` is
        given), ``params`` validated against the method's spec, ``layer`` resolved by its
        layer policy and ``target`` resolved on the logits. ``traces`` (of this batch) are
        reused when given; otherwise a one-shot set is built whose backward passes free the
        graph as they go (unless the method reuses its graph)."""
        bundle = bundle_for(model)
        spec = get_method(method)
        values = spec.validate(params or {})
        batch = batch if batch is not None else bundle.prepare(images)
        bundle.layers_for(batch.inputs)  # the dry run (once per bundle) at this input's size
        layer_name = spec.resolve_layer(bundle, layer)
        if traces is None:
            traces = TraceSet(bundle, batch.inputs, [layer_name] if layer_name else [],
                              with_graph=spec.needs_gradient, one_shot=not spec.reuses_graph)
        with model_lock(bundle.model):
            logits = traces.any(spec.rules[0]).logits.detach()
        targets = resolve_targets(target, logits, bundle.class_names)
        return cls(bundle, batch, traces, spec, targets, layer_name, values)

    def run(self, progress: Progress | None = None,
            live: dict[str, torch.Tensor] | None = None, warn: bool = True) -> Explanation:
        """Run the kernel (holding the model's lock). ``progress(fraction, raw_preview)`` is
        called between the chunks of an iterative method and may raise
        :class:`~xai_widgets.jobs.Cancelled`; ``live`` receives the series it reports. An
        all-zero map is flagged (``Explanation.all_zero``, its caption) and, with ``warn``,
        raises an :class:`~xai_widgets.errors.EmptyMapWarning`."""
        context = KernelContext(self.traces, self.targets, self.layer, self.params, progress,
                                live if live is not None else {})
        with model_lock(self.bundle.model):
            result = self.method.compute(context)
        explanation = self.explanation(result.map, result.layer or self.layer, result.extras)
        empty = explanation.all_zero
        if warn and bool(empty.any()):
            warnings.warn(EmptyMapWarning(empty_map_message(explanation)), stacklevel=3)
        return explanation

    def explanation(self, raw: torch.Tensor, layer: str | None,
                    extras: Mapping[str, Any]) -> Explanation:
        """An :class:`Explanation` of a raw map of this request (the result, or a preview)."""
        return Explanation(
            map=raw.detach().cpu(), method=self.method, targets=self.targets, layer=layer,
            params=dict(self.params), logits=self.traces.logits.detach().cpu(),
            display=self.batch.display, names=self.batch.names, bundle=self.bundle,
            extras={k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
                    for k, v in extras.items()})
