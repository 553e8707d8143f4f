"""CAM, class activation mapping (Zhou et al., CVPR 2016).

On a head ``logits = W · mean_hw(φ(A)) + b``: ``CAM_c = Σ_k W[c, k] · φ(A_k)``, shape
``(N, h, w)``; it needs one forward pass and no backward. Defined only at the layer that feeds
the global pooling; other heads (VGG, AlexNet, ConvNeXt's LayerNorm) get a clear error that
points to Grad-CAM, which generalises CAM (Grad-CAM = CAM / (h·w) on such a head).

Zhou, Khosla, Lapedriza, Oliva, Torralba. "Learning Deep Features for Discriminative
Localization." CVPR 2016. arXiv:1512.04150.
"""

from __future__ import annotations

from ..errors import MethodError
from ..render import RenderSettings
from .spec import KernelContext, KernelResult, MethodSpec


def compute(ctx: KernelContext) -> KernelResult:
    trace = ctx.traces.get("gradient", [] if ctx.layer is None else [ctx.layer])
    head = trace.head()
    if head is None:
        raise MethodError(
            f"CAM needs a model whose head is global average pooling + one linear layer; "
            f"{ctx.traces.bundle.name} ends otherwise. Use method='grad_cam', which "
            "generalises CAM to any head"
        )
    if ctx.layer is not None and ctx.layer != head.layer:
        raise MethodError(f"CAM is defined only at the layer that feeds the global pooling, "
                          f"{head.layer!r}, not at {ctx.layer!r}; use method='grad_cam' for "
                          "other layers")
    cam = head.class_activation_map(trace.activation(head.layer), ctx.target_index)
    return KernelResult(cam.float(), {"rectified_head": head.rectified}, layer=head.layer)


SPEC = MethodSpec(
    name="cam",
    label="CAM",
    family="cam",
    layer_policy="optional",
    cost="instant",
    paper="Zhou et al. Learning Deep Features for Discriminative Localization. CVPR 2016",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(polarity="positive"),
    needs_gradient=False,
    summary="Class weights of the linear head times the pooled feature maps; no backward.",
)
