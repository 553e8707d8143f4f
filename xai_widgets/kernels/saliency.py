"""Saliency: the vanilla gradient (Simonyan et al., 2014).

``map = ∂y_c/∂x``, shape ``(N, 3, H, W)``, raw and signed, at the model input (normalised
space). The paper's picture, ``max_c |∂y_c/∂x_c|``, is the default rendering (``max_abs``
over channels). Unlike the original project we never accumulate the input gradient across
classes: every target gets its own, cached, backward pass.

Simonyan, Vedaldi, Zisserman. "Deep Inside Convolutional Networks: Visualising Image
Classification Models and Saliency Maps." ICLR Workshop 2014. arXiv:1312.6034.
"""

from __future__ import annotations

from ..render import RenderSettings
from .spec import KernelContext, KernelResult, MethodSpec


def compute(ctx: KernelContext) -> KernelResult:
    return KernelResult(ctx.input_gradient().float())


SPEC = MethodSpec(
    name="saliency",
    label="Saliency (gradient)",
    family="gradient",
    layer_policy="none",
    noise_wrappable=True,
    cost="pass",
    paper="Simonyan et al. Deep Inside Convolutional Networks: Visualising Image "
          "Classification Models and Saliency Maps. ICLR Workshop 2014",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(channels="max_abs", polarity="absolute", clip_percentile=99.0),
    per_channel=True,
    summary="Gradient of the class score with respect to the input pixels.",
)
