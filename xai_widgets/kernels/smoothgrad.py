"""SmoothGrad, SmoothGrad² and VarGrad: a noise wrapper over any gradient-type method.

For a base method ``M`` (saliency, input × gradient, guided backprop, DeconvNet, integrated
gradients) and ``n`` noisy copies ``x + ε_s``, ``ε_s ~ N(0, σ²)``, ``σ = noise_level ·
(max x − min x)`` per image:

    SmoothGrad   (Smilkov et al. 2017)   (1/n) Σ_s M(x + ε_s)               signed
    SmoothGrad²  (Hooker et al. 2019)    (1/n) Σ_s M(x + ε_s)²              ≥ 0
    VarGrad      (Adebayo et al. 2018)   (1/n) Σ_s M(x + ε_s)² − SmoothGrad²  ≥ 0

(``aggregate`` = ``mean``, ``square``, ``variance``; VarGrad is the population variance).
Shape ``(N, 3, H, W)``, raw. The class explained is resolved on the clean image and kept for
every noisy copy. Noise sample ``s`` is one image ``ε_s / σ`` drawn from a generator seeded
with ``(seed, s)`` and shared by the batch (scaled by each image's ``σ``), so a batch gives the
same maps as its images one by one and the result does not depend on the chunk size.

The ``n × N`` noisy inputs run in chunks of ``chunk_size``: each chunk is a fresh
:class:`~xai_widgets.trace.TraceSet` and :class:`KernelContext` (targets repeated) handed to the
base method's own ``compute``, then dropped, so memory is bounded by the chunk (an iterative
base such as integrated gradients chunks its own passes with its ``chunk_size``). Progress is
reported after every chunk. A base integrated gradients runs ``base_steps`` steps (its
other parameters at their defaults) in chunks of the same ``chunk_size``.

Smilkov, Thorat, Kim, Viégas, Wattenberg. "SmoothGrad: removing noise by adding noise."
ICML Workshop on Visualization for Deep Learning 2017. arXiv:1706.03825.
Hooker, Erhan, Kindermans, Kim. "A Benchmark for Interpretability Methods in Deep Neural
Networks." NeurIPS 2019. arXiv:1806.10758.
Adebayo, Gilmer, Goodfellow, Kim. "Local Explanation Methods for Deep Neural Networks Lack
Sensitivity to Parameter Values." ICLR Workshop 2018. arXiv:1810.03307.
"""

from __future__ import annotations

import torch

from ..errors import ParameterError
from ..render import RenderSettings
from ..trace import TraceSet
from ._iterative import (
    chunk_rows,
    chunks,
    generator,
    model_input,
    out_of_memory_as_parameter_error,
)
from .spec import KernelContext, KernelResult, MethodSpec, Param

NAME = "smoothgrad"
AGGREGATES = ("mean", "square", "variance")


def noise(sample: int, seed: int, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """The standard normal noise image of sample ``sample`` (independent of batch and chunk)."""
    g = generator(seed * 1_000_003 + sample, like.device)
    return torch.randn(shape, generator=g, device=like.device, dtype=like.dtype)


def bases() -> tuple[str, ...]:
    """The methods SmoothGrad can wrap: those whose spec says ``noise_wrappable``
    (gradient-type, per-channel maps of the input)."""
    from . import REGISTRY  # the registry imports this module

    return tuple(name for name, spec in REGISTRY.items() if spec.noise_wrappable)


def compute(ctx: KernelContext) -> KernelResult:
    from . import get_method

    p = ctx.params
    base = get_method(p["base"])
    if not base.noise_wrappable:
        raise ParameterError(f"{NAME}: base {base.name!r} is not a gradient method on the "
                             f"input; use one of {', '.join(map(repr, bases()))}")
    # an iterative base runs base_steps steps in chunks of the same size
    shared = {"n_steps": p["base_steps"], "chunk_size": p["chunk_size"]}
    base_params = base.validate({name: value for name, value in shared.items()
                                 if name in base.defaults()})
    bundle = ctx.traces.bundle
    x = model_input(bundle, ctx.traces.inputs)
    images, samples = len(x), int(p["n_samples"])
    # per input: its copy, its noise, the noisy input and the base method's map
    chunk_size = chunk_rows(p["chunk_size"], images * samples,
                            4 * x[0].numel() * x.element_size(), x.device, NAME)
    sigma = p["noise_level"] * (x.flatten(1).amax(dim=1) - x.flatten(1).amin(dim=1))
    how = p["aggregate"]
    sums: list[torch.Tensor] = []  # Σ M and/or Σ M² per image
    jobs = images * samples
    drawn: dict[int, torch.Tensor] = {}
    with out_of_memory_as_parameter_error(chunk_size, x.device, NAME):
        for first, stop in chunks(jobs, chunk_size):
            job = torch.arange(first, stop, device=x.device)
            sample, image = job // images, job % images  # sample-major: every image at once
            for s in sample.unique().tolist():
                if s not in drawn:
                    drawn[s] = noise(s, p["seed"], x.shape[1:], x)
            eps = torch.stack([drawn[s] for s in sample.tolist()])
            noisy = torch.addcmul(x[image], sigma[image].view(-1, 1, 1, 1), eps)
            for s in [s for s in drawn if s < int(sample.max())]:
                del drawn[s]
            del eps
            traces = TraceSet(bundle, noisy, with_graph=base.needs_gradient, one_shot=True)
            chunk_ctx = KernelContext(traces, tuple(ctx.targets[i] for i in image.tolist()), None,
                                      base_params)
            maps = base.compute(chunk_ctx).map
            del chunk_ctx, traces, noisy
            if how == "variance":  # float64: E[M²] − E[M]² cancels
                maps = maps.double()
            terms = {"mean": (maps,), "square": (maps * maps,),
                     "variance": (maps, maps * maps)}[how]
            if not sums:
                sums = [torch.zeros((images, *maps.shape[1:]), dtype=maps.dtype,
                                    device=maps.device) for _ in terms]
            # the per-image sums as one matrix product: (images × chunk) @ (chunk × values)
            mixing = torch.zeros(images, len(job), dtype=maps.dtype, device=maps.device)
            mixing[image.to(maps.device), torch.arange(len(job), device=maps.device)] = 1
            for total, term in zip(sums, terms, strict=True):
                total.view(images, -1).addmm_(mixing, term.reshape(len(job), -1))
            del maps, terms
            ctx.report(stop / jobs, None if ctx.progress is None else
                       _aggregate(sums, how, stop / images))
    return KernelResult(_aggregate(sums, how, samples),
                        {"noise_std": sigma.float(), "base": base.name})


def _aggregate(sums: list[torch.Tensor], how: str, count: float) -> torch.Tensor:
    if how in ("mean", "square"):
        return (sums[0] / count).float()
    mean = sums[0] / count
    return (sums[1] / count - mean * mean).clamp(min=0).float()


SPEC = MethodSpec(
    name=NAME,
    label="SmoothGrad",
    family="gradient",
    layer_policy="none",
    cost="iterative",
    paper="Smilkov et al. SmoothGrad: removing noise by adding noise. ICML Workshop 2017",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(channels="max_abs", polarity="absolute", clip_percentile=99.0),
    params=(
        Param("base", "saliency", str, "the gradient method averaged over noisy copies",
              choices=bases),
        Param("n_samples", 50, int, "noisy copies per image", low=1, high=100_000),
        Param("noise_level", 0.15, float, "noise standard deviation as a fraction of the "
              "image's value range (the paper finds 10–20% best)", low=0.0, high=1.0),
        Param("aggregate", "mean", str, "mean (SmoothGrad), mean of squares (SmoothGrad²) or "
              "variance (VarGrad)", choices=AGGREGATES),
        Param("seed", 0, int, "seed of the noise", low=0, high=2**31 - 1),
        Param("chunk_size", 8, int, "noisy inputs per pass (memory bound; 8 is fastest on a "
              "CPU, larger on a GPU)", low=1,
              high=100_000),
        Param("base_steps", 16, int, "integration steps of each integrated-gradients map "
              "(base integrated_gradients only; its other parameters keep their defaults)",
              low=1, high=100_000),
    ),
    per_channel=True,
    needs_gradient=False,
    summary="Maps of a gradient method averaged over noisy copies of the image (also the "
            "mean of squares, SmoothGrad², and the variance, VarGrad).",
)
