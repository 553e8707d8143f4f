"""DeconvNet (Zeiler & Fergus, 2014).

The backward pass where every rectifier passes back the positive part of its signal whatever
its forward input was: ``R_in = [R_out]_+``. Shape ``(N, 3, H, W)``, raw. Max-pooling routes
by the forward switches (ordinary autograd), as in the paper.

Zeiler, Fergus. "Visualizing and Understanding Convolutional Networks." ECCV 2014.
arXiv:1311.2901.
"""

from __future__ import annotations

from ..render import RenderSettings
from .spec import KernelContext, KernelResult, MethodSpec


def compute(ctx: KernelContext) -> KernelResult:
    return KernelResult(ctx.input_gradient("deconvnet").float())


SPEC = MethodSpec(
    name="deconvnet",
    label="DeconvNet",
    family="propagation",
    layer_policy="none",
    noise_wrappable=True,
    cost="pass",
    paper="Zeiler & Fergus. Visualizing and Understanding Convolutional Networks. ECCV 2014",
    rules=("deconvnet",),
    compute=compute,
    display=RenderSettings(channels="sum_abs", polarity="absolute", clip_percentile=99.0),
    per_channel=True,
    summary="Backward pass through rectifiers that ignores their forward input.",
)
