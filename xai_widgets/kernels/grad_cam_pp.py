"""Grad-CAM++ (Chattopadhyay et al., WACV 2018).

With ``g = ∂y_c/∂A`` (the logit's gradient; the paper's ``exp(y_c)`` trick turns higher
derivatives into powers of ``g``):
``a_k(i, j) = g² / (2 g² + Σ_ab A_k(a, b) · g³)`` (0 where the denominator is 0),
``w_k = Σ_ij a_k(i, j) · relu(g_k(i, j))``, ``map = Σ_k w_k A_k``, shape ``(N, h, w)``, raw.
The common factor ``exp(y_c)`` of the weights is dropped (a positive scale per image).

Chattopadhyay, Sarkar, Howlader, Balasubramanian. "Grad-CAM++: Generalized Gradient-based
Visual Explanations for Deep Convolutional Networks." WACV 2018. arXiv:1710.11063.
"""

from __future__ import annotations

import torch

from ..render import RenderSettings
from .spec import KernelContext, KernelResult, MethodSpec


def compute(ctx: KernelContext) -> KernelResult:
    activation, gradient = ctx.layer_activation_and_gradient()
    g2 = gradient.pow(2)
    denominator = 2 * g2 + activation.sum(dim=(2, 3), keepdim=True) * gradient.pow(3)
    alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, 1), 0)
    weights = (alpha * gradient.clamp(min=0)).sum(dim=(2, 3))
    cam = (weights[:, :, None, None] * activation).sum(dim=1)
    return KernelResult(cam.float(), {"channel_weights": weights})


SPEC = MethodSpec(
    name="grad_cam_pp",
    label="Grad-CAM++",
    family="cam",
    layer_policy="required",
    cost="pass",
    paper="Chattopadhyay et al. Grad-CAM++: Generalized Gradient-based Visual Explanations "
          "for Deep Convolutional Networks. WACV 2018",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(polarity="positive"),
    summary="Grad-CAM with pixel-wise weights from higher-order terms; better on several "
            "instances of a class.",
)
