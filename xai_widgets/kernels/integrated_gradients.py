"""Integrated gradients (Sundararajan, Taly, Yan, ICML 2017).

For input ``x``, baseline ``x'`` and target logit ``f = y_c``:

    IG_i(x) = (x_i − x'_i) · ∫_0^1 ∂f/∂x_i (x' + α (x − x')) dα
            ≈ (x_i − x'_i) · Σ_k w_k ∂f/∂x_i (x' + α_k (x − x'))

with the points ``α_k`` and weights ``w_k`` of a quadrature rule: the paper's right Riemann
sum (``α_k = k/m``, ``w_k = 1/m``, ``k = 1..m``, the default), left, middle, trapezoid, or
Gauss–Legendre. Shape ``(N, 3, H, W)``, raw and signed, in the model's normalised input space.
Completeness: ``Σ_i IG_i = f(x) − f(x')`` up to the quadrature error, which is reported as
``extras["completeness_error"]`` (and ``extras["delta"] = f(x) − f(x')``) with the map.

Baselines: ``black`` (a black photo pushed through the model's normalisation, as the paper
uses for images), ``mean`` (zero input: the dataset mean colour), ``blurred`` (Gaussian blur
of the image, Sturmfels, Lundberg, Lee, "Visualizing the Impact of Feature Attribution
Baselines", Distill 2020), ``uniform`` noise (seeded), or a user tensor.

The ``n_steps × N`` gradient passes run in chunks of ``chunk_size`` inputs: one forward with
autograd and one backward per chunk (a fresh :class:`~xai_widgets.trace.Trace` that does not
retain its graph, dropped after use), so memory is bounded by the chunk; progress is reported
after every chunk. ``f(x)`` comes from the batch's cached trace, ``f(x')`` from the pass at
``α = 0`` where the rule has one (left, trapezoid), else from one forward of the baselines
without autograd.

Sundararajan, Taly, Yan. "Axiomatic Attribution for Deep Networks." ICML 2017.
arXiv:1703.01365.
"""

from __future__ import annotations

from typing import Any

import torch

from ..models import ModelBundle
from ..render import RenderSettings
from ..trace import INPUT, Trace
from ._iterative import (
    BASELINES,
    QUADRATURES,
    baseline,
    chunk_rows,
    chunks,
    inference,
    logits_of,
    model_input,
    out_of_memory_as_parameter_error,
    quadrature,
)
from .spec import KernelContext, KernelResult, MethodSpec, Param

NAME = "integrated_gradients"


def path_params(steps_default: int = 50) -> tuple[Param, ...]:
    """The parameters shared by the integrated-gradients methods."""
    return (
        Param("n_steps", steps_default, int, "number of points on the path (gradient passes "
              "per image)", low=1, high=100_000),
        Param("quadrature", "riemann_right", str, "rule on [0, 1]: the paper's right "
              "Riemann sum, left, middle, trapezoid or Gauss–Legendre", choices=QUADRATURES),
        Param("baseline", "black", str, "the reference input: black photo, dataset mean "
              "(zero input), blurred image, uniform noise, or (from Python) a tensor shaped "
              "like the model input", choices=BASELINES, tensor=True),
        Param("blur_sigma", 5.0, float, "Gaussian blur of the 'blurred' baseline, in pixels "
              "of the model input (> 0)", low=0.0, high=50.0),
        Param("seed", 0, int, "seed of the 'uniform' baseline", low=0, high=2**31 - 1),
        Param("chunk_size", 8, int, "inputs per forward+backward pass (memory bound; 8 is "
              "fastest on a CPU, larger on a GPU)", low=1, high=100_000),
    )


def baselines_of(ctx: KernelContext, inputs: torch.Tensor, method: str) -> torch.Tensor:
    p = ctx.params
    return baseline(p["baseline"], inputs, ctx.traces.bundle.preprocessing, method=method,
                    seed=p["seed"], blur_sigma=p["blur_sigma"])


def target_logits(bundle: ModelBundle, inputs: torch.Tensor,
                  index: torch.Tensor) -> torch.Tensor:
    """``f_c`` of each input, without autograd, float64 ``(N,)``."""
    with inference(bundle):
        logits = logits_of(bundle, inputs)
    return logits.double()[torch.arange(len(index)), index]


def integrated_path_gradients(ctx: KernelContext, start: torch.Tensor, end: torch.Tensor,
                              name: str, method: str, preview: Any = None
                              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``Σ_k w_k ∂f/∂T (start + α_k (end − start))`` per image, ``T`` = :data:`INPUT` or a
    recorded layer, computed in chunks of ``chunk_size`` inputs along the straight path in
    input space; and ``f(start)`` (float64 ``(N,)``) when the rule has the point ``α = 0``
    (left, trapezoid: no extra forward for the completeness check), else ``None``.
    ``preview(partial_sum)`` -> a preview map for the progress report."""
    p = ctx.params
    points, weights = quadrature(p["quadrature"], p["n_steps"], method)
    bundle = ctx.traces.bundle
    images, steps = len(start), len(points)
    # per input: the point on the path, the trace's copy of it and its gradient
    chunk_size = chunk_rows(p["chunk_size"], images * steps,
                            3 * start[0].numel() * start.element_size(), start.device, method)
    alphas = torch.tensor(points, dtype=start.dtype, device=start.device)
    factors = torch.tensor(weights, dtype=start.dtype, device=start.device)
    record = [] if name == INPUT else [name]
    copy = [name] if name != INPUT and bundle.layers[name].mutated_later else []
    difference = end - start
    total: torch.Tensor | None = None
    at_start = torch.full((images,), float("nan"), dtype=torch.float64, device=start.device)
    jobs = images * steps
    with out_of_memory_as_parameter_error(chunk_size, start.device, method):
        for first, stop in chunks(jobs, chunk_size):
            job = torch.arange(first, stop, device=start.device)
            step, image = job // images, job % images  # step-major: every image at once
            inputs = torch.addcmul(start[image], alphas[step].view(-1, 1, 1, 1), difference[image])
            targets = tuple(ctx.targets[i] for i in image.tolist())
            trace = Trace(bundle, inputs, "gradient", record=record, copy=copy,
                          retain_graph=False)
            grads = trace.gradient(targets, name)
            first_point = (step == 0) & (alphas[0] == 0)
            if bool(first_point.any()):
                rows = first_point.nonzero()[:, 0]
                at_start[image[rows]] = trace.logits.detach().double()[
                    rows, torch.tensor(targets, device=rows.device)[rows]]
            del trace, inputs
            if total is None:
                total = torch.zeros((images, *grads.shape[1:]), dtype=grads.dtype,
                                    device=grads.device)
            # Σ_k w_k ∇_k per image as one matrix product: (images × chunk) @ (chunk × values)
            mixing = torch.zeros(images, len(job), dtype=grads.dtype, device=grads.device)
            mixing[image, torch.arange(len(job), device=grads.device)] = \
                factors[step].to(grads.dtype)
            total.view(images, -1).addmm_(mixing, grads.reshape(len(job), -1))
            del grads
            ctx.report(stop / jobs,
                       None if preview is None or ctx.progress is None else preview(total))
    assert total is not None
    return total, (None if bool(at_start.isnan().any()) else at_start)


def completeness(attributions: torch.Tensor, f_end: torch.Tensor,
                 f_start: torch.Tensor) -> dict[str, torch.Tensor]:
    """``Σ attributions − (f(x) − f(x'))`` per image, and its parts."""
    delta = f_end - f_start
    total = attributions.double().flatten(1).sum(dim=1)
    return {"completeness_error": (total - delta).float(), "delta": delta.float(),
            "relative_completeness_error": ((total - delta).abs()
                                            / delta.abs().clamp(min=1e-12)).float()}


def compute(ctx: KernelContext) -> KernelResult:
    bundle = ctx.traces.bundle
    x = model_input(bundle, ctx.traces.inputs)
    x0 = baselines_of(ctx, x, NAME)
    difference = x - x0
    grads, f_x0 = integrated_path_gradients(
        ctx, x0, x, INPUT, NAME, preview=lambda partial: (difference * partial).float())
    attributions = (difference * grads).float()
    index = ctx.target_index
    f_x = ctx.traces.logits.double()[torch.arange(len(index)), index]
    if f_x0 is None:  # the rule has no point at the baseline: one forward of it
        f_x0 = target_logits(bundle, x0, index)
    extras = completeness(attributions, f_x, f_x0)
    extras["baseline"] = x0
    return KernelResult(attributions, extras)


SPEC = MethodSpec(
    name=NAME,
    label="Integrated gradients",
    family="gradient",
    layer_policy="none",
    noise_wrappable=True,
    cost="iterative",
    paper="Sundararajan et al. Axiomatic Attribution for Deep Networks. ICML 2017",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(channels="sum", polarity="signed", clip_percentile=99.5),
    params=path_params(),
    per_channel=True,
    needs_gradient=False,
    summary="Gradients averaged along the straight path from a baseline, times the "
            "difference: attributions that add up to the change of the score.",
)
