"""Contrastive excitation backprop, c-EB (Zhang et al., ECCV 2016).

``MWP(o) − MWP(ō)`` at the chosen layer, where ``o`` is the target unit and ``ō`` its dual
with negated weights: the evidence for the class minus the evidence against it. At the top
layer (the op that makes the logits) the positive shares ``(x_j w_cj)⁺ / Σ (x w_c)⁺`` and
the negative ones ``(x_j w_cj)⁻ / Σ (x w_c)⁻`` are subtracted; below, excitation backprop's
rules carry the difference down (they are linear in the signal, so one backward gives
``MWP(o) − MWP(ō)``). The map is summed over channels, ``(N, h, w)``, raw and signed; each
image's total is 0 (``extras["mass"]``); the paper and the XNN project show the positive part,
the default rendering. The XNN project (Qi, Khorram, Li 2017) visualises its x-features
this way.

Zhang, Bargal, Lin, Brandt, Shen, Sclaroff. "Top-down Neural Attention by Excitation
Backprop." ECCV 2016 (IJCV 2018). arXiv:1608.00507.
"""

from __future__ import annotations

from ..render import RenderSettings
from .excitation_backprop import mwp_map
from .spec import KernelContext, KernelResult, MethodSpec


def compute(ctx: KernelContext) -> KernelResult:
    return mwp_map(ctx, "contrastive_excitation")


SPEC = MethodSpec(
    name="contrastive_excitation_backprop",
    label="Contrastive excitation backprop",
    family="propagation",
    layer_policy="required",
    cost="pass",
    paper="Zhang et al. Top-down Neural Attention by Excitation Backprop. ECCV 2016",
    rules=("contrastive_excitation",),
    compute=compute,
    display=RenderSettings(polarity="positive"),
    summary="Excitation backprop for the class minus that of its opposite: "
            "discriminative evidence (c-EB).",
)
