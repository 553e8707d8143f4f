"""Integrated gradients at a layer (Sundararajan et al. 2017, applied to a hidden layer).

With ``A`` the activations of the chosen layer, ``x'`` the baseline input and ``f = y_c``,
two paths are offered (``path``):

* ``"input"`` (default; the deliberative-explanations project, Wang & Vasconcelos, NeurIPS
  2019, integrates this way at the feature layer): the straight line in *input* space,
  gradients taken at the layer,

      IG_k(i, j) = (A_k(x) − A_k(x'))(i, j) · Σ_t w_t ∂f/∂A_k(i, j) (x' + α_t (x − x'))

  Completeness holds only approximately (the path of ``A`` is not straight); the error is
  reported.
* ``"layer"``: the straight line in the layer's *activation* space, ``A' + α (A − A')``,
  substituted for the layer's output (a forward hook inside :func:`xai_widgets.scope.forward_hooks`;
  the input stays ``x``): integrated gradients of the network above the layer, for which
  completeness is exact up to the quadrature, ``Σ IG = f(x) − f(x | A := A')``.

The map is the channel sum ``Σ_k IG_k``, ``(N, h, w)``, raw and signed (the deliberative
project clamps negatives afterwards: that is the ``positive`` rendering).
``extras["completeness_error"]``, ``extras["delta"]`` as for ``integrated_gradients``.

Sundararajan, Taly, Yan. "Axiomatic Attribution for Deep Networks." ICML 2017.
arXiv:1703.01365. Wang, Vasconcelos. "Deliberative Explanations: visualizing network
insecurities." NeurIPS 2019. arXiv:1910.13888.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..render import RenderSettings
from ..scope import eval_mode, forward_hooks
from ..trace import TraceSet
from ._iterative import chunks, inference, model_input, quadrature
from .integrated_gradients import (
    baselines_of,
    completeness,
    integrated_path_gradients,
    path_params,
)
from .spec import KernelContext, KernelResult, MethodSpec, Param

NAME = "layer_integrated_gradients"
PATHS = ("input", "layer")


def compute(ctx: KernelContext) -> KernelResult:
    assert ctx.layer is not None, "the registry gives layer methods a layer"
    layer = ctx.layer
    bundle = ctx.traces.bundle
    x = model_input(bundle, ctx.traces.inputs)
    x0 = baselines_of(ctx, x, NAME)
    activation = ctx.traces.get("gradient", [layer]).activation(layer)
    base_trace = TraceSet(bundle, x0, [layer], with_graph=False).get("gradient", [layer])
    activation0 = base_trace.activation(layer)
    difference = activation - activation0
    index = ctx.target_index
    rows = torch.arange(len(index))
    f_x = ctx.traces.logits.double()[rows, index]

    def preview(partial: torch.Tensor) -> torch.Tensor:
        return (difference * partial).sum(dim=1).float()

    if ctx.params["path"] == "input":
        grads, _ = integrated_path_gradients(ctx, x0, x, layer, NAME, preview)
        f_0 = base_trace.logits.double()[rows, index]
    else:
        grads, f_0 = _activation_path(ctx, x, activation0, activation, preview)
    attributions = difference * grads
    extras: dict[str, Any] = completeness(attributions, f_x, f_0)
    return KernelResult(attributions.sum(dim=1).float(), extras)


def _activation_path(ctx: KernelContext, x: torch.Tensor, start: torch.Tensor,
                     end: torch.Tensor, preview: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_t w_t ∂f/∂A at ``A = start + α_t (end − start)`` substituted for the layer's output
    (input ``x``), and ``f`` with the layer's output replaced by ``start``."""
    p = ctx.params
    assert ctx.layer is not None
    points, weights = quadrature(p["quadrature"], p["n_steps"], NAME)
    chunk_size = int(p["chunk_size"])
    bundle = ctx.traces.bundle
    module = dict(bundle.model.named_modules())[ctx.layer]
    images, steps = len(x), len(points)
    alphas = torch.tensor(points, dtype=start.dtype, device=start.device)
    factors = torch.tensor(weights, dtype=start.dtype, device=start.device)
    replacement: list[torch.Tensor] = []

    def substitute(_module: nn.Module, _args: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor) or output.shape != replacement[0].shape:
            raise RuntimeError(f"layer {ctx.layer!r} returned an unexpected output")
        return replacement[0].clone()  # a non-leaf: later in-place ops on it are allowed

    index = ctx.targets
    total = torch.zeros_like(start)
    jobs = images * steps
    with forward_hooks({module: substitute}):
        with inference(bundle):
            replacement[:] = [start]
            logits = bundle.model(x)
            f_0 = logits.double()[torch.arange(images), torch.tensor(index)]
        with eval_mode(bundle.model), torch.enable_grad():
            for first, stop in chunks(jobs, chunk_size):
                job = torch.arange(first, stop, device=x.device)
                step, image = job // images, job % images
                alpha = alphas[step].view(-1, 1, 1, 1)
                leaf = (start[image] + alpha * (end[image] - start[image])).requires_grad_(True)
                replacement[:] = [leaf]
                logits = bundle.model(x[image])
                score = logits[torch.arange(len(image)), image.new_tensor(
                    [index[i] for i in image.tolist()])].sum()
                (grads,) = torch.autograd.grad(score, leaf)
                replacement.clear()
                total.index_add_(0, image, grads * factors[step].view(-1, 1, 1, 1))
                ctx.report(stop / jobs, preview(total))
    return total, f_0


SPEC = MethodSpec(
    name=NAME,
    label="Layer integrated gradients",
    family="gradient",
    layer_policy="required",
    cost="iterative",
    paper="Sundararajan et al. Axiomatic Attribution for Deep Networks. ICML 2017",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(polarity="signed"),
    params=(*path_params(),
            Param("path", "input", str, "straight line in input space with gradients at the "
                  "layer (deliberative explanations), or in the layer's activation space "
                  "(exact completeness)", choices=PATHS)),
    needs_gradient=False,
    summary="Integrated gradients of a hidden layer's activations, summed over channels.",
)
