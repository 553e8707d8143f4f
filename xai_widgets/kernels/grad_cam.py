"""Grad-CAM (Selvaraju et al., ICCV 2017).

``α_k = mean_ij ∂y_c/∂A_k(i, j)``, ``map = Σ_k α_k A_k``, shape ``(N, h, w)``, raw and signed
(the paper's final ReLU is the ``positive`` polarity of the default rendering). ``y_c`` is
the logit. On a global-average-pooling head, at the pooled layer, the gradient is known in
closed form and the map equals CAM / (h·w): no backward pass is run.

Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra. "Grad-CAM: Visual Explanations from Deep
Networks via Gradient-based Localization." ICCV 2017. arXiv:1610.02391.
"""

from __future__ import annotations

from ..render import RenderSettings
from .spec import KernelContext, KernelResult, MethodSpec


def compute(ctx: KernelContext) -> KernelResult:
    activation, gradient = ctx.layer_activation_and_gradient()
    weights = gradient.mean(dim=(2, 3))
    cam = (weights[:, :, None, None] * activation).sum(dim=1)
    return KernelResult(cam.float(), {"channel_weights": weights})


SPEC = MethodSpec(
    name="grad_cam",
    label="Grad-CAM",
    family="cam",
    layer_policy="required",
    cost="pass",
    paper="Selvaraju et al. Grad-CAM: Visual Explanations from Deep Networks via "
          "Gradient-based Localization. ICCV 2017",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(polarity="positive"),
    summary="Feature maps weighted by their spatially averaged gradient.",
)
