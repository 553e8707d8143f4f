"""LayerCAM (Jiang et al., IEEE TIP 2021).

``map(i, j) = Σ_k relu(∂y_c/∂A_k(i, j)) · A_k(i, j)``, shape ``(N, h, w)``, raw: each
location is weighted by its own positive gradient, so the map stays sharp at early layers.

Jiang, Zhang, Hou, Cheng, Wei. "LayerCAM: Exploring Hierarchical Class Activation Maps for
Localization." IEEE Transactions on Image Processing 30, 2021.
"""

from __future__ import annotations

from ..render import RenderSettings
from .spec import KernelContext, KernelResult, MethodSpec


def compute(ctx: KernelContext) -> KernelResult:
    activation, gradient = ctx.layer_activation_and_gradient()
    cam = (gradient.clamp(min=0) * activation).sum(dim=1)
    return KernelResult(cam.float())


SPEC = MethodSpec(
    name="layer_cam",
    label="LayerCAM",
    family="cam",
    layer_policy="required",
    cost="pass",
    paper="Jiang et al. LayerCAM: Exploring Hierarchical Class Activation Maps for "
          "Localization. IEEE TIP 2021",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(polarity="positive"),
    summary="Activations weighted cell by cell by their positive gradient; sharp at any layer.",
)
