"""Shared machinery of the optimisation methods (feature inversion, inverted representation).

* :class:`Probe`: forward passes of new inputs through a user's model that record one
  layer's output, optionally stopping the pass there (a feature loss needs nothing deeper),
  under ``scope.eval_mode`` and ``scope.forward_hooks`` for the whole optimisation.
* :func:`report_every`: progress reports with a preview, every few steps.

Nothing here touches the model's parameters: the optimised tensors are leaves the kernels
create, and gradients are taken with ``torch.autograd.grad`` with respect to them only, so
no parameter accumulates a ``.grad`` and autograd skips the weight gradients altogether.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from ..models import ModelBundle
from ..scope import eval_mode, forward_hooks, model_lock
from .spec import KernelContext


class _Reached(Exception):
    """Raised by the probe's hook to stop a forward pass once the layer has run."""


class Probe:
    """Forward passes through ``bundle.model`` that record the output of ``layer``.

    Use as ``with Probe.open(bundle, layer) as probe:``; inside, the model is in eval mode
    and carries one forward hook, both removed on exit (also on an exception or a
    :class:`~xai_widgets.kernels.spec.Cancelled`).
    """

    def __init__(self, model: nn.Module, copy: bool) -> None:
        self.model = model
        self._copy = copy
        self._stop = False
        self._output: torch.Tensor | None = None

    @classmethod
    @contextmanager
    def open(cls, bundle: ModelBundle, layer: str) -> Iterator[Probe]:
        """Eval mode and a hook on ``layer`` (a canonical name of ``bundle.layers``)."""
        info = bundle.layers[layer]
        probe = cls(bundle.model, copy=info.mutated_later)
        module = dict(bundle.model.named_modules())[info.name]
        with ExitStack() as stack:
            stack.enter_context(model_lock(bundle.model))
            stack.enter_context(eval_mode(bundle.model))
            stack.enter_context(forward_hooks({module: probe._hook}))
            yield probe

    def _hook(self, _module: nn.Module, _args: Any, output: Any) -> Any:
        self._output = output
        if self._stop:
            raise _Reached
        # a later in-place op (a functional ReLU) would change the recorded value: hand the
        # rest of the network a copy instead, as a Trace does
        return output.clone() if self._copy else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output for ``x`` ``(N, 3, H, W)``; the pass stops at the layer."""
        self._stop, self._output = True, None
        try:
            self.model(x)
        except _Reached:
            pass
        finally:
            self._stop = False
        return self._take()

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's output and the logits for ``x``: one whole forward pass."""
        self._output = None
        logits = self.model(x)
        return self._take(), logits

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits for ``x`` (the hook records the layer on the way)."""
        return self.model(x)

    def _take(self) -> torch.Tensor:
        output = self._output
        self._output = None
        if not isinstance(output, torch.Tensor):
            raise RuntimeError("the probed layer did not run in the forward pass")
        return output


def report_every(ctx: KernelContext, done: int, total: int, every: int,
                 preview: torch.Tensor | None, losses: torch.Tensor) -> None:
    """Report progress after step ``done`` of ``total`` every ``every`` steps and at the
    end, with the preview and the loss so far (``losses``: ``(N, total)``); may raise
    :class:`~xai_widgets.kernels.spec.Cancelled`."""
    if done % every == 0 or done == total:
        ctx.report(done / total, None if preview is None else preview.detach().float(),
                   loss=losses[:, :done])
