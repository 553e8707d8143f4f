"""``explain()``: one call from a model, images, a method and a target to a raw map."""

from __future__ import annotations

from typing import Any

from torch import nn

from .errors import MethodError
from .explanation import Explanation
from .kernels import get_method
from .kernels.spec import KernelContext, MethodSpec, Progress
from .models import ModelBundle
from .scope import model_lock
from .targets import resolve_targets
from .trace import TraceSet


def explain(model: ModelBundle | nn.Module, images: Any, method: str | MethodSpec = "grad_cam",
            target: Any = "top1", layer: str | nn.Module | None = None,
            progress: Progress | None = None, **params: Any) -> Explanation:
    """Explain the model's decision on ``images`` with ``method``.

    ``model``: a :class:`ModelBundle` (``load_model()``) or any classifier ``nn.Module``
    (ImageNet preprocessing assumed). ``images``: a path, PIL image, array, tensor, or a list
    (a float tensor ``(N, 3, H, W)`` is taken as the normalised model input).
    ``target``: a class index, a class name, ``"topK"``, or one per image.
    ``layer``: for layer methods; ``None`` picks the last spatial layer before the pooling.
    ``progress``: ``progress(fraction, preview)`` called between the chunks of iterative
    methods (it may raise :class:`~xai_widgets.kernels.spec.Cancelled`).
    ``params``: the method's parameters (``xai_widgets.methods()[name].params``).
    """
    bundle = ModelBundle.wrap(model)
    spec = get_method(method)
    values = spec.validate(params)
    if layer is not None and not spec.needs_layer and spec.name != "cam":
        raise MethodError(f"{spec.name} works on the input and takes no layer; drop layer= or "
                          "use a layer method such as 'grad_cam'")
    batch = bundle.prepare(images)
    layer_name = None
    if spec.needs_layer or layer is not None:
        layer_name = bundle.layers.resolve(layer, bundle.model)
    traces = TraceSet(bundle, batch.inputs, [layer_name] if layer_name else [],
                      with_graph=spec.needs_gradient, one_shot=not spec.reuses_graph)
    with model_lock(bundle.model):
        targets = resolve_targets(target, traces.any(spec.rules[0]).logits.detach(),
                                  bundle.class_names)
        result = spec.compute(KernelContext(traces, targets, layer_name, values, progress))
    return Explanation(
        map=result.map.detach().cpu(), method=spec, targets=targets,
        layer=result.layer or layer_name, params=values, logits=traces.logits.cpu(),
        display=batch.display, names=batch.names, bundle=bundle,
        extras={k: v.detach().cpu() if hasattr(v, "detach") else v
                for k, v in result.extras.items()},
    )
