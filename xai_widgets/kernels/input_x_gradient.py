"""Input × gradient (Shrikumar et al., 2016).

``map = x ⊙ ∂y_c/∂x``, shape ``(N, 3, H, W)``, raw and signed; ``x`` is the model input as
the model sees it (normalised), so the zero of the attribution is the dataset mean colour.
Shares its backward pass with saliency.

Shrikumar, Greenside, Shcherbina, Kundaje. "Not Just a Black Box: Learning Important
Features Through Propagating Activation Differences." arXiv:1605.01713, 2016.
"""

from __future__ import annotations

from ..render import RenderSettings
from ..trace import INPUT
from .spec import KernelContext, KernelResult, MethodSpec


def compute(ctx: KernelContext) -> KernelResult:
    inputs = ctx.traces.get("gradient").tensor(INPUT).detach()
    return KernelResult((inputs * ctx.input_gradient()).float())


SPEC = MethodSpec(
    name="input_x_gradient",
    label="Input × gradient",
    family="gradient",
    layer_policy="none",
    noise_wrappable=True,
    cost="pass",
    paper="Shrikumar et al. Not Just a Black Box: Learning Important Features Through "
          "Propagating Activation Differences. arXiv:1605.01713, 2016",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(channels="sum", polarity="signed", clip_percentile=99.5),
    per_channel=True,
    summary="Input times its gradient: a first-order estimate of each pixel's contribution.",
)
