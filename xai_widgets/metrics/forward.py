"""Batched, chunked forward passes for the metrics (DESIGN rule 3).

A metric describes the inputs it needs as ``count`` jobs and a ``build(start, stop)`` that
makes the inputs of jobs ``start:stop``; :func:`target_scores` runs them through the model
``chunk_size`` at a time under ``torch.inference_mode()`` with the model in eval mode
(:func:`xai_widgets.scope.eval_mode`, restored afterwards) and its lock held
(:func:`xai_widgets.scope.model_lock`; a progress callback may pause it between chunks), so
memory is bounded by the chunk size whatever the number of jobs, and calls ``progress``
after every chunk. :func:`default_chunk_size` is the chunk size when the caller gives none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ModelError
from ..kernels.spec import Progress
from ..models import ModelBundle
from ..scope import eval_mode, model_lock

#: ``build(start, stop)`` -> the model inputs of jobs ``start:stop``, ``(stop - start, 3, H, W)``
Build = Callable[[int, int], torch.Tensor]


@dataclass(frozen=True)
class TargetScores:
    """Per job, ``(J,)`` each, on the CPU: the target's ``logit`` and ``probability``
    (softmax), and its ``rank`` among the classes (0: it is the top-1 class)."""

    logit: torch.Tensor
    probability: torch.Tensor
    rank: torch.Tensor

    def get(self, score: str) -> torch.Tensor:
        """``"probability"`` or ``"logit"``, ``(J,)``."""
        return self.probability if score == "probability" else self.logit


def default_chunk_size(device: torch.device) -> int:
    """Inputs per forward pass when the caller gives none: 2 on a CPU, 32 on an accelerator.

    On a CPU a larger batch saves arithmetic per input, but its activations (tens of MiB)
    come from fresh pages that glibc's allocator hands back to the system after every chunk,
    and the page faults cost more than batching saves: in
    ``benchmarks/results/metrics.md`` batches of 2 beat batches of 1 and of 8 or more.
    An accelerator needs large batches to be busy.
    """
    return 2 if device.type == "cpu" else 32


def logits(bundle: ModelBundle, inputs: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """The logits of ``inputs`` ``(N, 3, H, W)``: ``(N, classes)`` float32 on the CPU."""
    out: list[torch.Tensor] = []
    _run(bundle, lambda a, b: inputs[a:b], len(inputs), chunk_size,
         lambda z, _a, _b: out.append(z.float().cpu()), None)
    return torch.cat(out)


def target_scores(bundle: ModelBundle, build: Build, targets: torch.Tensor, chunk_size: int,
                  progress: Progress | None = None) -> TargetScores:
    """Run the ``len(targets)`` jobs of ``build`` and read each job's target class."""
    parts: list[TargetScores] = []
    _run(bundle, build, len(targets), chunk_size,
         lambda z, a, b: parts.append(read_targets(z, targets[a:b])), progress)
    if not parts:
        return TargetScores(torch.empty(0), torch.empty(0), torch.empty(0, dtype=torch.long))
    return TargetScores(*(torch.cat([getattr(p, name) for p in parts])
                          for name in ("logit", "probability", "rank")))


def read_targets(logits: torch.Tensor, targets: torch.Tensor) -> TargetScores:
    """Logits ``(B, classes)`` and one class per row ``(B,)`` -> :class:`TargetScores`."""
    z = logits.float()
    chosen = z.gather(1, targets.to(z.device)[:, None])
    log_p = chosen - z.logsumexp(dim=1, keepdim=True)
    rank = (z > chosen).sum(dim=1)
    return TargetScores(chosen[:, 0].cpu(), log_p[:, 0].exp().cpu(), rank.cpu())


def _run(bundle: ModelBundle, build: Build, count: int, chunk_size: int,
         read: Callable[[torch.Tensor, int, int], None], progress: Progress | None) -> None:
    model = bundle.model
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = bundle.device
    with model_lock(model), torch.inference_mode(), eval_mode(model):
        for start in range(0, count, chunk_size):
            stop = min(count, start + chunk_size)
            out = model(build(start, stop).to(device=device, dtype=dtype))
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or len(out) != stop - start:
                raise ModelError("the model must return logits (N, classes); wrap it in a "
                                 "module whose forward returns them")
            read(out, start, stop)
            if progress is not None:
                progress(stop / count, None)
