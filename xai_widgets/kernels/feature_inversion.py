"""Guided feature inversion (Du, Liu, Song, Hu; KDD 2018), the authors' formulation.

A mask is a non-negative combination of the feature maps ``A`` (``(K, h, w)``) of a layer
``l₀`` (``mask_layer``; by default the chosen layer ``l``) on the original image ``x``,
upsampled (bilinear, corners aligned) from ``l₀``'s resolution to the input and normalised::

    M = Σ_k w_k A_k,   m = (up(M) − min up(M)) / max up(M)   (clipped to [0, 1]),  w ≥ 0

It blends the image with a background ``p`` (a Gaussian blur of ``x``)::

    x̃ = x ⊙ m + p ⊙ (1 − m)      (keeps the foreground)
    x̄ = x ⊙ (1 − m) + p ⊙ m      (removes it)

Step 1 (iterations ``0 .. T1 − 1``, class-agnostic) keeps the features of ``x`` at ``l``::

    min_w  ‖φ_l(x̃) − φ_l(x)‖² / ‖φ_l(x)‖² + λ₁ ‖w‖²

Step 2 (the remaining iterations, same ``w`` and same optimiser) makes the mask
class-discriminative for the target class ``c`` (``p_c`` = softmax probability)::

    min_w  − p_c(x̃) + λ₂ p_c(x̄) + λ₃ ‖w‖²

Adam (lr 1e-2, halved every 10 iterations), ``w`` initialised to 0.1 and projected onto
``[0, 1e5]`` after every step, 11 + 69 iterations, ``λ = (5, 1, 2)``: the defaults of the
authors' code (mndu/guided-feature-inversion), which uses one layer (pool5 of VGG19) for both
the mask basis and the feature loss; here that is the chosen layer unless ``mask_layer`` names
another (the paper's ``l₀`` and ``l`` are separate; the seed port took relu5_4 for the basis
and pool5 for the loss: a finer mask). One guard: an image
whose every ``w_k`` reaches 0 (an empty mask, which the scale-free mask cannot recover from)
keeps its previous ``w``. The raw map is the mask
``m`` ``(N, H, W)`` in [0, 1] at the input resolution: its upsampling and normalisation are
part of the method (the blend uses them). Each image has its own ``w``; a batch is optimised
together, and gradients are taken with respect to ``w`` only.

Du, Liu, Song, Hu. "Towards Explanation of DNN-based Prediction with Guided Feature
Inversion." KDD 2018. arXiv:1804.00506.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..blur import gaussian_blur
from ..errors import LayerError, ParameterError
from ..models import ModelBundle
from ..render import RenderSettings
from ._inversion import Probe, report_every
from .spec import KernelContext, KernelResult, LayerName, MethodSpec, Param

#: upper bound of the projection of ``w`` (the authors' clamp)
W_MAX = 1e5
#: ``mask_layer`` value for the inverted layer itself (the authors' setting)
SAME = "same"


def mask_layer(bundle: ModelBundle, layer: str, value: str) -> str:
    """The canonical name of the mask basis's layer: ``layer`` for :data:`SAME`, else
    ``value`` resolved by the model's catalogue (a :class:`LayerError` with a suggestion)."""
    if value == SAME:
        return layer
    try:
        return str(bundle.layers.resolve(value, bundle.model))
    except LayerError as exc:
        raise LayerError(f"feature_inversion: parameter 'mask_layer': {exc}; or {SAME!r} for "
                         f"the inverted layer ({layer!r})") from exc


@dataclass
class MaskModel:
    """The mask as a function of ``w``: feature maps ``A`` ``(N, K, h, w)`` of the original
    image, the input size ``(H, W)`` and the normaliser (``"official"`` or ``"minmax"``)."""

    basis: torch.Tensor
    size: tuple[int, int]
    normaliser: str

    def layer_mask(self, w: torch.Tensor) -> torch.Tensor:
        """``M = Σ_k w_k A_k`` at the layer's resolution, ``(N, h, w)``."""
        return torch.einsum("nk,nkhw->nhw", w, self.basis)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        """The normalised mask ``m`` ``(N, H, W)`` in [0, 1]."""
        up = F.interpolate(self.layer_mask(w)[:, None], size=self.size, mode="bilinear",
                           align_corners=True)[:, 0]
        low = up.flatten(1).amin(1)[:, None, None]
        high = up.flatten(1).amax(1)[:, None, None]
        scale = high if self.normaliser == "official" else high - low
        return ((up - low) / scale.clamp(min=1e-12)).clamp(0, 1)


def background(inputs: torch.Tensor, kind: str, sigma: float, seed: int) -> torch.Tensor:
    """The background ``p`` ``(N, 3, H, W)`` in normalised space: ``"blur"`` (Gaussian blur
    of the image, ``sigma`` in input pixels), ``"mean"`` (zeros: the normalisation's mean
    colour) or ``"noise"`` (standard normal noise from a generator seeded by ``seed``)."""
    if kind == "blur":
        return gaussian_blur(inputs, sigma, border="renormalise")
    if kind == "mean":
        return torch.zeros_like(inputs)
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same on any device
    return torch.randn(inputs.shape, generator=generator).to(inputs)


def compute(ctx: KernelContext) -> KernelResult:
    p = ctx.params
    total, first = int(p["iterations"]), int(p["step1_iterations"])
    if first > total:
        raise ParameterError(f"feature_inversion: step1_iterations ({first}) must not exceed "
                             f"iterations ({total}); step 2 runs the remaining ones")
    assert ctx.layer is not None, "the registry gives layer methods a layer"
    bundle = ctx.traces.bundle
    basis_layer = mask_layer(bundle, ctx.layer, p["mask_layer"])
    trace = ctx.traces.get("gradient", list(dict.fromkeys([ctx.layer, basis_layer])))
    x = trace.input.detach()
    reference = trace.activation(ctx.layer)  # (N, K, h, w): candidate layers are spatial
    basis = trace.activation(basis_layer).float()  # (N, K₀, h₀, w₀)
    n = x.shape[0]
    targets = ctx.target_index
    rows = torch.arange(n, device=x.device)
    mask_of = MaskModel(basis, (x.shape[-2], x.shape[-1]), p["normaliser"])
    back = background(x, p["background"], float(p["blur_sigma"]), int(p["seed"]))
    reference_norm = reference.flatten(1).pow(2).sum(1).clamp(min=1e-12)

    w = torch.full(basis.shape[:2], float(p["init_weight"]), device=x.device,
                   dtype=torch.float32, requires_grad=True)
    optimiser = torch.optim.Adam([w], lr=float(p["lr"]))
    losses = torch.zeros(n, total, device=x.device)

    def blends(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = mask[:, None].to(x.dtype)
        return x * m + back * (1 - m), x * (1 - m) + back * m

    with Probe.open(bundle, ctx.layer) as probe, torch.enable_grad():
        for i in range(total):
            mask = mask_of(w)
            kept, removed = blends(mask)
            if i < first:
                diff = (probe.features(kept) - reference).flatten(1).pow(2).sum(1)
                loss = diff / reference_norm + p["sparsity_step1"] * w.pow(2).sum(1)
            else:
                probs = probe.logits(torch.cat([kept, removed])).float().softmax(1)
                kept_p, removed_p = probs[:n][rows, targets], probs[n:][rows, targets]
                loss = -kept_p + p["removal_weight"] * removed_p + \
                    p["sparsity_step2"] * w.pow(2).sum(1)
            (w.grad,) = torch.autograd.grad(loss.sum(), w)
            previous = w.detach().clone()
            optimiser.step()
            with torch.no_grad():
                w.clamp_(0, W_MAX)
                # the mask ignores the scale of w, so the data terms never hold the last
                # channel up against ‖w‖²: an image whose every w_k reached 0 (an empty
                # mask) keeps its previous w instead
                dead = w.amax(1) <= 0
                w.copy_(torch.where(dead[:, None], previous, w))
                losses[:, i] = loss.detach()
            for group in optimiser.param_groups:  # the step after iteration i
                group["lr"] = p["lr"] * p["lr_decay"] ** ((i + 1) // p["decay_every"])
            report_every(ctx, i + 1, total, int(p["report_every"]), mask, losses)

        with torch.no_grad():
            w_final = w.detach()
            mask = mask_of(w_final)
            kept, removed = blends(mask)
            probs = probe.logits(torch.cat([x, kept, removed])).float().softmax(1)
            scores = probs.view(3, n, -1)[:, rows, targets].T
    return KernelResult(mask, {
        "mask": mask,
        "background_mask": 1 - mask,
        "blended": kept,
        "removed": removed,
        "background": back,
        "loss": losses,
        "channel_weights": w_final,
        "layer_mask": mask_of.layer_mask(w_final),
        "mask_layer": basis_layer,
        "probabilities": scores,
    })


SPEC = MethodSpec(
    name="feature_inversion",
    label="Guided feature inversion",
    family="optimisation",
    layer_policy="required",
    cost="iterative",
    paper="Du, Liu, Song, Hu. Towards Explanation of DNN-based Prediction with Guided "
          "Feature Inversion. KDD 2018",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(polarity="positive"),
    params=(
        Param("iterations", 80, int, "optimisation steps in all (step 1, then step 2)", 1,
              100_000),
        Param("step1_iterations", 11, int, "how many of them keep the layer's features "
              "(step 1); the others make the mask class-discriminative (step 2)", 0, 100_000),
        Param("lr", 1e-2, float, "Adam learning rate", 1e-6, 10.0),
        Param("lr_decay", 0.5, float, "learning-rate factor applied every decay_every steps",
              0.0, 1.0),
        Param("decay_every", 10, int, "steps between learning-rate decays", 1, 100_000),
        Param("sparsity_step1", 5.0, float, "λ₁, weight of ‖w‖² in step 1", 0.0, 1e6),
        Param("removal_weight", 1.0, float, "λ₂, weight of the class probability of the "
              "image with the mask removed (step 2)", 0.0, 1e6),
        Param("sparsity_step2", 2.0, float, "λ₃, weight of ‖w‖² in step 2", 0.0, 1e6),
        Param("init_weight", 0.1, float, "initial value of every channel weight w_k", 0.0,
              1e5),
        Param("background", "blur", str, "what replaces the removed parts: a blur of the "
              "image, the mean colour, or noise", choices=("blur", "mean", "noise")),
        Param("blur_sigma", 11.0, float, "standard deviation of the background blur, in "
              "input pixels", 0.0, 1000.0),
        LayerName("mask_layer", SAME, str, "layer whose feature maps form the mask (its "
                  "resolution is the mask's before upsampling): 'same' = the inverted layer, "
                  "or another layer's name", choices=(SAME,)),
        Param("normaliser", "official", str, "mask normalisation: (M − min) / max as the "
              "authors' code, or true min-max", choices=("official", "minmax")),
        Param("report_every", 5, int, "steps between progress reports (with the mask)", 1,
              100_000),
        Param("seed", 0, int, "seed of the noise background", 0, 2**31 - 1),
    ),
    needs_gradient=False,
    summary="Learns a mask of feature-map channels that keeps the layer's features, then "
            "the class; iterative.",
)
