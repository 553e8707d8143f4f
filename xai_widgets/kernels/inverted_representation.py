"""Inverted representation (Mahendran & Vedaldi, CVPR 2015), as pytorch-cnn-visualizations ran it.

Reconstructs an image ``x`` from the features ``Φ₀ = φ_l(x₀)`` of the chosen layer on the
original image ``x₀`` (``(N, 3, H, W)`` in the model's normalised space)::

    min_x  γ ‖φ_l(x) − Φ₀‖² / ‖Φ₀‖²  +  λ_α Σ |x|^α  +  λ_V Σ_{c,i,j} ((x_{c,i+1,j} − x_{c,i,j})²
                                                           + (x_{c,i,j+1} − x_{c,i,j})²)^{β/2}

(the total variation runs over the ``(H−1) × (W−1)`` grid of every channel). Defaults of
utkuozbulak/pytorch-cnn-visualizations: ``γ = 0.1``, ``α = 6``, ``λ_α = 1e-7``, ``β = 2``,
``λ_V = 1e-8``, ``x`` initialised to ``0.1 · N(0, 1)``, SGD with momentum 0.9, 201 steps,
learning rate 1e4 for the first step, then divided by 10 after steps 0, 40, 80, ...
One addition (``clip_to_image``, on by default): after every step ``x`` is projected onto the
valid pixel range (``[0, 1]`` before normalisation). The α-norm prior only discourages large
values; with the original step sizes the reconstruction diverges to NaN on networks other
than the AlexNet they were tuned for (e.g. the embedded EfficientNet beyond its first stages).

The raw output is the reconstruction itself, ``(N, 3, H, W)`` in normalised space (a
per-channel "map": what the layer retains of the image, not an attribution); it is shown as
a picture (``gradient_view="colour"``), and ``extras["picture"]`` holds it de-normalised to
RGB in [0, 1]. The method is class-agnostic: the target only labels the result. Each image
of a batch is reconstructed independently, all in one optimisation.

Mahendran, Vedaldi. "Understanding Deep Image Representations by Inverting Them."
CVPR 2015. arXiv:1412.0035.
"""

from __future__ import annotations

import torch

from ..errors import MethodError
from ..render import RenderSettings
from ._inversion import Probe, report_every
from .spec import KernelContext, KernelResult, MethodSpec, Param


def total_variation(x: torch.Tensor, beta: float) -> torch.Tensor:
    """``Σ_{c,i,j} ((x[c,i+1,j] − x[c,i,j])² + (x[c,i,j+1] − x[c,i,j])²)^{β/2}`` per image,
    over the ``(H−1) × (W−1)`` grid: ``(N, C, H, W)`` -> ``(N,)``."""
    corner = x[:, :, :-1, :-1]
    squared = (x[:, :, 1:, :-1] - corner) ** 2 + (x[:, :, :-1, 1:] - corner) ** 2
    if beta != 2:  # |·|^β is not differentiable at 0 for β < 2
        squared = squared + 1e-12
    return (squared ** (beta / 2)).flatten(1).sum(1)


def compute(ctx: KernelContext) -> KernelResult:
    p = ctx.params
    assert ctx.layer is not None, "the registry gives layer methods a layer"
    bundle = ctx.traces.bundle
    trace = ctx.traces.get("gradient", [ctx.layer])
    original = trace.input.detach()
    target = trace.activation(ctx.layer)
    target_norm = target.flatten(1).pow(2).sum(1).clamp(min=1e-12)
    total = int(p["iterations"])

    generator = torch.Generator().manual_seed(int(p["seed"]))
    init = p["init_scale"] * torch.randn(original.shape, generator=generator)
    x = init.to(device=original.device, dtype=original.dtype).requires_grad_(True)
    optimiser = torch.optim.SGD([x], lr=float(p["lr"]), momentum=float(p["momentum"]))
    low = bundle.preprocessing.normalise(torch.zeros(3, 1, 1)).to(x)
    high = bundle.preprocessing.normalise(torch.ones(3, 1, 1)).to(x)
    losses = torch.zeros(original.shape[0], total, device=original.device)

    with Probe.open(bundle, ctx.layer) as probe, torch.enable_grad():
        for i in range(total):
            features = probe.features(x)
            loss = p["feature_weight"] * (features - target).flatten(1).pow(2).sum(1) \
                / target_norm \
                + p["alpha_weight"] * x.abs().pow(p["alpha"]).flatten(1).sum(1) \
                + p["tv_weight"] * total_variation(x, float(p["tv_beta"]))
            (x.grad,) = torch.autograd.grad(loss.sum(), x)
            optimiser.step()
            if p["clip_to_image"]:
                with torch.no_grad():
                    x.copy_(torch.minimum(torch.maximum(x, low), high))
            losses[:, i] = loss.detach()
            for group in optimiser.param_groups:  # /10 after steps 0, 40, 80, ...
                group["lr"] = p["lr"] * p["lr_decay"] ** (i // p["decay_every"] + 1)
            report_every(ctx, i + 1, total, int(p["report_every"]), x, losses)
        with torch.no_grad():
            final = x.detach()
            feature_loss = (probe.features(final) - target).flatten(1).pow(2).sum(1) \
                / target_norm
    if not bool(torch.isfinite(final).all()):
        raise MethodError("inverted_representation diverged (the image became NaN or "
                          "infinite); lower lr (e.g. lr=1e2) or set clip_to_image=True")
    return KernelResult(final.float(), {
        "picture": bundle.preprocessing.denormalise(final),
        "loss": losses,
        "relative_feature_error": feature_loss,
    })


SPEC = MethodSpec(
    name="inverted_representation",
    label="Inverted representation",
    family="optimisation",
    layer_policy="required",
    cost="iterative",
    paper="Mahendran, Vedaldi. Understanding Deep Image Representations by Inverting Them. "
          "CVPR 2015",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(gradient_view="colour", opacity=1.0),
    params=(
        Param("iterations", 201, int, "SGD steps", 1, 100_000),
        Param("lr", 1e4, float, "learning rate of the first step", 1e-8, 1e8),
        Param("lr_decay", 0.1, float, "learning-rate factor after steps 0, decay_every, "
              "2·decay_every, ...", 0.0, 1.0),
        Param("decay_every", 40, int, "steps between learning-rate decays", 1, 100_000),
        Param("momentum", 0.9, float, "SGD momentum", 0.0, 0.999),
        Param("feature_weight", 0.1, float, "γ, weight of the normalised feature loss", 0.0,
              1e8),
        Param("alpha", 6.0, float, "α of the α-norm prior Σ|x|^α", 1.0, 12.0),
        Param("alpha_weight", 1e-7, float, "λ_α, weight of the α-norm prior", 0.0, 1e8),
        Param("tv_beta", 2.0, float, "β of the total-variation prior", 1.0, 4.0),
        Param("tv_weight", 1e-8, float, "λ_V, weight of the total-variation prior", 0.0, 1e8),
        Param("clip_to_image", True, bool, "keep the reconstruction in the valid pixel range "
              "after every step (an addition to the original, which can diverge)"),
        Param("init_scale", 0.1, float, "standard deviation of the random initial image", 0.0,
              10.0),
        Param("seed", 0, int, "seed of the initial image", 0, 2**31 - 1),
        Param("report_every", 5, int, "steps between progress reports (with the image)", 1,
              100_000),
    ),
    per_channel=True,
    needs_gradient=False,
    summary="Reconstructs an image from one layer's features (what the layer keeps); "
            "iterative, class-agnostic.",
)
