"""xai_widgets: visual explanations of image classifiers, explored in Jupyter.

>>> import xai_widgets as xw
>>> bundle = xw.load_model()                       # embedded EfficientNet-Lite0, offline
>>> e = xw.explain(bundle, xw.sample_images()["chelsea"], method="grad_cam", target="tabby")
>>> e.map.shape                                    # raw, signed float32 (N, h, w)
torch.Size([1, 7, 7])
"""

from __future__ import annotations

from .errors import (
    EmptyMapWarning,
    ImageError,
    LayerError,
    MethodError,
    MetricError,
    MetricWarning,
    ModelDownloadError,
    ModelError,
    ParameterError,
    RuleWarning,
    TargetError,
    XaiError,
)
from .explain import explain
from .explanation import Explanation
from .images import Preprocessing, sample_images
from .kernels import REGISTRY, MethodSpec, get_method
from .layers import LayerCatalog, LayerInfo
from .models import ZOO, ModelBundle, load_model
from .render import RenderSettings

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``Explorer`` and ``Compare`` load ipywidgets only when first used."""
    if name in ("Explorer", "Compare", "XFeatures", "Insecurities"):
        from . import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'xai_widgets' has no attribute {name!r}")


def methods() -> dict[str, MethodSpec]:
    """The registered methods by name, each with its label, parameters, cost and paper."""
    return dict(REGISTRY)


def list_layers(model: ModelBundle | object) -> LayerCatalog:
    """The candidate layers of a model (or bundle), with shapes and the default marked."""
    return ModelBundle.wrap(model).layers  # type: ignore[arg-type]


__all__ = [
    "ZOO",
    "Compare",
    "EmptyMapWarning",
    "Explanation",
    "Explorer",
    "ImageError",
    "Insecurities",
    "LayerCatalog",
    "LayerError",
    "LayerInfo",
    "MethodError",
    "MethodSpec",
    "MetricError",
    "MetricWarning",
    "ModelBundle",
    "ModelDownloadError",
    "ModelError",
    "ParameterError",
    "Preprocessing",
    "RenderSettings",
    "RuleWarning",
    "TargetError",
    "XFeatures",
    "XaiError",
    "explain",
    "get_method",
    "list_layers",
    "load_model",
    "methods",
    "sample_images",
]
