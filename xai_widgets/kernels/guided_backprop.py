"""Guided backpropagation (Springenberg et al., 2015).

The gradient of ``y_c`` at the input where every rectifier passes back only positive signal
where its input was positive: ``R_in = 1[x > 0] · [R_out]_+`` (``σ'(x) · [R_out]_+`` for
ReLU6, Hardswish, GELU, SiLU, ...). Shape ``(N, 3, H, W)``, raw. The rule reaches every
rectifier *call* (module, in-place, reused, functional: DenseNet's last ``F.relu``) through
:mod:`xai_widgets.rules`; it warns where it finds none.

Springenberg, Dosovitskiy, Brox, Riedmiller. "Striving for Simplicity: The All
Convolutional Net." ICLR Workshop 2015. arXiv:1412.6806.
"""

from __future__ import annotations

from ..render import RenderSettings
from .spec import KernelContext, KernelResult, MethodSpec


def compute(ctx: KernelContext) -> KernelResult:
    return KernelResult(ctx.input_gradient("guided").float())


SPEC = MethodSpec(
    name="guided_backprop",
    label="Guided backprop",
    family="propagation",
    layer_policy="none",
    noise_wrappable=True,
    cost="pass",
    paper="Springenberg et al. Striving for Simplicity: The All Convolutional Net. "
          "ICLR Workshop 2015",
    rules=("guided",),
    compute=compute,
    display=RenderSettings(channels="sum_abs", polarity="absolute", clip_percentile=99.0),
    per_channel=True,
    summary="Gradient with negative signals stopped at every rectifier: sharp edges.",
)
