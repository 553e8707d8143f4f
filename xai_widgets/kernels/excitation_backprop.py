"""Excitation backprop (Zhang et al., ECCV 2016).

The marginal winning probability (MWP) of every unit, propagated top-down from the target
class: a unit passes its probability to its inputs in proportion to their excitatory
contributions,

    P(a_j) = Σ_i  a_j w⁺_ji / (Σ_j' a_j' w⁺_j'i) · P(a_i),      P(target logit) = 1,

biases ignored. The map is the MWP at the chosen layer's output summed over channels,
``(N, h, w)``, non-negative, summing to 1 per image (mass is conserved from layer to layer and
lost only at units without an excitatory input). It stops at that layer: the backward runs
from the logits down to it and no further. ``extras["mass"]`` is the total per image.

The rule (:mod:`xai_widgets.rules`, ``"excitation"``) is applied to every call of the traced
forward pass by a ``TorchFunctionMode``: convolutions and linear layers (batch norm in eval
mode folded into the op that feeds it), average pooling and means, max pooling (winner takes
all), residual additions, ReLU/ReLU6 and other activations (pass-through). For inputs that can
be negative (the image, the linear bottlenecks of EfficientNet) contributions ``x_j w_ij``
are split by sign so the shares stay non-negative (identical to the paper where ``x ≥ 0``).

Zhang, Bargal, Lin, Brandt, Shen, Sclaroff. "Top-down Neural Attention by Excitation
Backprop." ECCV 2016 (IJCV 2018). arXiv:1608.00507.
"""

from __future__ import annotations

from ..render import RenderSettings
from .spec import KernelContext, KernelResult, MethodSpec


def mwp_map(ctx: KernelContext, rule: str) -> KernelResult:
    """The channel sum of the signal of ``rule`` at the layer, with its total per image."""
    assert ctx.layer is not None, "the registry gives layer methods a layer"
    trace = ctx.traces.get(rule, [ctx.layer])  # type: ignore[arg-type]
    mass = trace.gradient(ctx.targets, ctx.layer).sum(dim=1).float()
    return KernelResult(mass, {"mass": mass.sum(dim=(1, 2))})


def compute(ctx: KernelContext) -> KernelResult:
    return mwp_map(ctx, "excitation")


SPEC = MethodSpec(
    name="excitation_backprop",
    label="Excitation backprop",
    family="propagation",
    layer_policy="required",
    cost="pass",
    paper="Zhang et al. Top-down Neural Attention by Excitation Backprop. ECCV 2016",
    rules=("excitation",),
    compute=compute,
    display=RenderSettings(polarity="positive"),
    summary="Top-down probability of each unit to be a winner for the class: "
            "a non-negative map whose mass sums to one at every layer.",
)
