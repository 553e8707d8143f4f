"""Guided Grad-CAM (Selvaraju et al., ICCV 2017).

``map = GBP ⊙ up(relu(Grad-CAM))``: guided backprop ``(N, 3, H, W)`` times the rectified
Grad-CAM map bilinearly upsampled to the input size, as the paper combines them (the ReLU and
the upsampling are part of the method's definition, not display steps). Signed, raw. Costs
the two traces it combines: Grad-CAM's (plain gradient) and guided backprop's.

Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra. "Grad-CAM: Visual Explanations from Deep
Networks via Gradient-based Localization." ICCV 2017. arXiv:1610.02391.
"""

from __future__ import annotations

from ..render import RenderSettings, upsample
from . import grad_cam, guided_backprop
from .spec import KernelContext, KernelResult, MethodSpec


def compute(ctx: KernelContext) -> KernelResult:
    cam = grad_cam.compute(ctx).map.clamp(min=0)
    guided = guided_backprop.compute(ctx).map
    weight = upsample(cam, (guided.shape[-2], guided.shape[-1]), "bilinear")
    return KernelResult((guided * weight[:, None]).float(), {"grad_cam": cam})


SPEC = MethodSpec(
    name="guided_grad_cam",
    label="Guided Grad-CAM",
    family="propagation",
    layer_policy="required",
    cost="pass",
    paper="Selvaraju et al. Grad-CAM: Visual Explanations from Deep Networks via "
          "Gradient-based Localization. ICCV 2017",
    rules=("gradient", "guided"),
    compute=compute,
    display=RenderSettings(channels="sum_abs", polarity="absolute", clip_percentile=99.0),
    per_channel=True,
    summary="Guided backprop masked by Grad-CAM: fine detail, class-discriminative.",
)
