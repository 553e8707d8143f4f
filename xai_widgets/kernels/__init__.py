"""The registry: one :class:`MethodSpec` per method module (DESIGN rule 5).

Adding a method touches its module, one line below, its card folder ``kernels/<name>/`` and
its tests; ``tests/test_registry.py`` checks that the four sets agree.
"""

from __future__ import annotations

from ..errors import MethodError, did_you_mean
from . import (
    cam,
    contrastive_excitation_backprop,
    deconvnet,
    excitation_backprop,
    feature_inversion,
    grad_cam,
    grad_cam_pp,
    gradient_hessian,
    guided_backprop,
    guided_grad_cam,
    input_x_gradient,
    integrated_gradients,
    inverted_representation,
    layer_cam,
    layer_integrated_gradients,
    layerwise_inverse,
    rise,
    saliency,
    score_cam,
    smoothgrad,
)
from .spec import KernelContext, KernelResult, MethodSpec, Param

REGISTRY: dict[str, MethodSpec] = {
    module.SPEC.name: module.SPEC
    for module in (
        cam,
        grad_cam,
        grad_cam_pp,
        layer_cam,
        saliency,
        input_x_gradient,
        guided_backprop,
        deconvnet,
        guided_grad_cam,
        feature_inversion,
        inverted_representation,
        layerwise_inverse,
        integrated_gradients,
        layer_integrated_gradients,
        smoothgrad,
        gradient_hessian,
        excitation_backprop,
        contrastive_excitation_backprop,
        rise,
        score_cam,
    )
}


def get_method(name: str | MethodSpec) -> MethodSpec:
    """The spec of method ``name``; a :class:`MethodError` with suggestions otherwise."""
    if isinstance(name, MethodSpec):
        return name
    if name in REGISTRY:
        return REGISTRY[name]
    by_label = {spec.label.lower(): spec for spec in REGISTRY.values()}
    if isinstance(name, str) and name.lower() in by_label:
        return by_label[name.lower()]
    hint = did_you_mean(str(name), REGISTRY) or f"available: {', '.join(REGISTRY)}"
    raise MethodError(f"unknown method {name!r}; {hint}")


__all__ = ["REGISTRY", "KernelContext", "KernelResult", "MethodSpec", "Param", "get_method"]
