"""Score-CAM (Wang et al., CVPR Workshops 2020).

Each channel ``A_k`` of the layer, upsampled to the input and min-max normalised,
``H_k = s(up(A_k))``, masks the image; the target's score on the masked image weights the
channel:

    α_k = f_c(x ⊙ H_k + x_fill ⊙ (1 − H_k)),      map = Σ_k α_k A_k

Shape ``(N, h, w)`` at the layer's resolution, raw (the paper's ReLU and the upsampling are
display steps: ``Σ_k α_k up(A_k) = up(Σ_k α_k A_k)``). ``f_c`` is the softmax probability as
in the authors' code (``score="logit"`` for the logit); ``x_fill`` is zero input (``mean``,
the authors' ``x ⊙ H_k``), ``black`` or ``blurred``. A channel that is constant over the map
has no normalised mask and weight 0, as in the authors' code; it costs no forward.
``max_channels = K`` keeps only the ``K`` channels with the largest mean activation per image
(the others get weight 0): ``K`` forwards instead of one per channel.

The activations come from the batch's cached trace (no forward of its own for ``x``); the
masked images are built and run ``chunk_size`` at a time under ``torch.inference_mode()``,
so memory is bounded by the chunk; progress is reported after every chunk.
``extras["channel_weights"]`` holds ``α``, ``(N, K)``.

Wang, Wang, Du, Yang, Zhang, Ding, Mardziel, Hu. "Score-CAM: Score-Weighted Visual
Explanations for Convolutional Neural Networks." CVPR Workshops 2020. arXiv:1910.01279.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..render import RenderSettings
from ._iterative import (
    SCORES,
    baseline,
    chunk_rows,
    chunks,
    inference,
    logits_of,
    model_input,
    out_of_memory_as_parameter_error,
    target_score,
)
from .spec import KernelContext, KernelResult, MethodSpec, Param

NAME = "score_cam"
FILLS = ("mean", "black", "blurred")


def compute(ctx: KernelContext) -> KernelResult:
    assert ctx.layer is not None, "the registry gives layer methods a layer"
    p = ctx.params
    bundle = ctx.traces.bundle
    activation = ctx.traces.get("gradient", [ctx.layer]).activation(ctx.layer)
    x = model_input(bundle, ctx.traces.inputs)
    images, _, height, width = x.shape
    channels = activation.shape[1]
    fill = baseline(p["fill"], x, bundle.preprocessing, method=NAME)
    difference = x - fill
    low = activation.flatten(2).amin(dim=2)
    high = activation.flatten(2).amax(dim=2)
    usable = high > low  # (N, K): a constant channel has no mask
    cap = int(p["max_channels"])
    if 0 < cap < channels:
        mean = activation.mean(dim=(2, 3)).masked_fill(~usable, float("-inf"))
        top = torch.zeros_like(usable)
        top.scatter_(1, mean.topk(cap, dim=1).indices, True)
        usable &= top
    image_index, channel_index = usable.nonzero(as_tuple=True)
    jobs = len(image_index)
    weights = torch.zeros(images, channels, dtype=torch.float32, device=activation.device)
    # per input: the masked input, the filled and the difference rows it is made of
    chunk_size = chunk_rows(p["chunk_size"], jobs, 3 * x[0].numel() * x.element_size(),
                            x.device, NAME)
    targets = ctx.target_index.to(activation.device)
    with out_of_memory_as_parameter_error(chunk_size, x.device, NAME), inference(bundle):
        for start, stop in chunks(jobs, chunk_size):
            image = image_index[start:stop]
            channel = channel_index[start:stop]
            maps = activation[image, channel][:, None]
            up = F.interpolate(maps, size=(height, width), mode="bilinear",
                               align_corners=False)
            up_low = up.flatten(1).amin(dim=1).view(-1, 1, 1, 1)
            up_high = up.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
            masks = ((up - up_low) / (up_high - up_low).clamp(min=1e-12)).to(x.dtype)
            batch = fill[image] + masks * difference[image]
            scores = target_score(logits_of(bundle, batch), targets[image], p["score"])
            weights[image, channel] = scores.to(weights.dtype)
            ctx.report(stop / jobs, _weighted(weights, activation))
    if jobs == 0:
        ctx.report(1.0, None)
    return KernelResult(_weighted(weights, activation),
                        {"channel_weights": weights, "channels_used": usable.sum(dim=1)})


def _weighted(weights: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    return torch.einsum("nk,nkhw->nhw", weights.to(activation.dtype), activation).float()


SPEC = MethodSpec(
    name=NAME,
    label="Score-CAM",
    family="cam",
    layer_policy="required",
    cost="iterative",
    paper="Wang et al. Score-CAM: Score-Weighted Visual Explanations for Convolutional "
          "Neural Networks. CVPR Workshops 2020",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(polarity="positive"),
    params=(
        Param("max_channels", 0, int, "keep only the K channels with the largest mean "
              "activation (0: all channels)", low=0, high=1_000_000),
        Param("fill", "mean", str, "what replaces the masked-out pixels", choices=FILLS),
        Param("score", "probability", str, "the target's softmax probability or its logit",
              choices=SCORES),
        Param("chunk_size", 8, int, "masked images per forward pass (memory bound; 8 is "
              "fastest on a CPU, larger on a GPU)", low=1,
              high=100_000),
    ),
    needs_gradient=False,
    summary="Feature maps weighted by the class probability of the image masked by each "
            "of them: no gradients.",
)
