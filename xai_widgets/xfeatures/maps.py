"""One contrastive excitation-backprop map per x-feature, all of them in one backward pass.

The combined model is the CNN up to the embedding ``Z`` followed by the SRAE's encoder (the
layers above ``Z`` are not run). For x-feature ``k`` the top-down signal is one-hot at ``e_k``;
the top layer is the encoder's last linear layer (``encoder3``), where c-EB subtracts the
normalised negative contributions from the positive ones, and below it the excitation rules
of :mod:`xai_widgets.rules` (the engine's ``"contrastive_excitation"`` rule, the same as the
``contrastive_excitation_backprop`` method) carry the difference down to the chosen layer;
the map is the channel sum there, raw and signed.

All x-features of an image come from one forward and one backward pass: the activation of the
chosen layer is replicated ``n_x`` times in the batch (a forward hook), the layers above it run
on the ``n_x`` copies, and one ``autograd.grad`` call seeds copy ``k`` at ``e_k``. The layers
below the chosen one run once; those above it ``n_x`` times (cheap at the usual high layers).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .. import rules
from ..errors import LayerError
from ..models import ModelBundle
from ..scope import eval_mode, forward_hooks, model_lock
from .features import Embedding, StopForward, capture
from .srae import SRAE

#: name of the model input as a map layer
INPUT = "input"


class _Bypass(TorchFunctionMode):
    """Notices ops that mix the replicated rows with rows that skipped the replication (a
    skip connection around the chosen layer): the map would not be exact there."""

    def __init__(self, rows: int, replicated: int) -> None:
        super().__init__()
        self.sizes = {rows, replicated}
        self.mixed = False

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        if not self.mixed and len(self.sizes) == 2:
            firsts = {a.shape[0] for a in args if isinstance(a, torch.Tensor) and a.ndim >= 2
                      and a.grad_fn is not None}
            if self.sizes <= firsts:
                self.mixed = True
        return func(*args, **(kwargs or {}))


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def xfeature_maps(bundle: ModelBundle, srae: SRAE, embedding: Embedding, inputs: torch.Tensor,
                  layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """c-EB maps ``(N, n_x, h, w)`` of every x-feature at ``layer`` (a candidate layer of the
    model, ``"input"`` for the image, ``None`` for the model's default layer), and the
    x-features ``e`` ``(N, n_x)`` of the images."""
    model = bundle.model
    n = srae.n_features
    rows = int(inputs.shape[0])
    parameter = next(model.parameters(), None)
    x = inputs.detach().to(device=bundle.device,
                           dtype=parameter.dtype if parameter is not None else None)
    recorded: list[torch.Tensor] = []
    hooks: dict[nn.Module, Any] = {}
    if layer == INPUT:
        x = x.repeat_interleave(n, dim=0).clone().requires_grad_(True)
        recorded.append(x)
    else:
        name = bundle.layers.resolve(layer, model)
        info = bundle.layers[name]
        module = dict(model.named_modules())[name]

        def replicate(_module: nn.Module, _args: Any, output: Any) -> Any:
            copies = output.repeat_interleave(n, dim=0)
            recorded.append(copies)
            return copies.clone() if info.mutated_later else copies

        hooks[module] = replicate
        x = x.clone().requires_grad_(True)
    sink: list[torch.Tensor] = []
    bypass = _Bypass(rows, rows * n) if layer != INPUT and n > 1 else None
    with model_lock(model), torch.enable_grad(), eval_mode(model), eval_mode(srae), \
            forward_hooks(hooks), capture(model, embedding, sink, stop=True), \
            rules.applied("contrastive_excitation"):
        with bypass if bypass is not None else _nothing(), suppress(StopForward):
            model(x)
        if not sink:
            raise LayerError(f"the embedding layer {embedding.name!r} did not run")
        z = sink[-1]
        if not recorded or z.shape[0] != rows * n:
            raise LayerError(f"layer {layer!r} does not lie below the embedding "
                             f"{embedding.name!r}; choose a layer that feeds it")
        e = srae.encode(z)
    if bypass is not None and bypass.mixed:
        raise LayerError(f"a skip connection goes around layer {layer!r} (the signal would "
                         "bypass it); choose the output of a whole block (e.g. the model's "
                         "default layer) or 'input'")
    seed = torch.eye(n, dtype=e.dtype, device=e.device).repeat(rows, 1)
    (grad,) = torch.autograd.grad(e, recorded[-1], seed)
    maps = grad.sum(dim=1) if grad.ndim == 4 else grad
    maps = maps.reshape(rows, n, *maps.shape[1:]).float().detach()
    values = e.detach().reshape(rows, n, n)[:, 0].float()
    return maps, values
