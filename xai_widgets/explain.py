"""``explain()``: one call from a model, images, a method and a target to a raw map."""

from __future__ import annotations

from typing import Any

from torch import nn

from .explanation import Explanation
from .kernels.spec import MethodSpec, Progress
from .models import ModelBundle
from .progress import progress_bar
from .request import Request


def explain(model: ModelBundle | nn.Module, images: Any, method: str | MethodSpec = "grad_cam",
            target: Any = "top1", layer: str | nn.Module | None = None,
            progress: Progress | bool | None = None, **params: Any) -> Explanation:
    """Explain the model's decision on ``images`` with ``method``.

    ``model``: a :class:`ModelBundle` (``load_model()``) or any classifier ``nn.Module``
    (ImageNet preprocessing assumed; its layer catalogue is kept while the module lives).
    ``images``: a path, PIL image, array, tensor, or a list (a float tensor ``(N, 3, H, W)``
    is taken as the normalised model input).
    ``target``: a class index, a class name, ``"top1"`` (the predicted class), ``"rankK"``
    (the K-th most probable), or one per image.
    ``layer``: for layer methods; ``None`` picks the last spatial layer before the pooling.
    ``progress``: iterative methods show a progress bar (terminal or notebook) unless
    ``False``; or a callable ``progress(fraction, preview)`` called between chunks (it may
    raise :class:`~xai_widgets.jobs.Cancelled`).
    ``params``: the method's parameters (``xai_widgets.methods()[name].params``).
    """
    request = Request.make(model, images, method, target, layer, params)
    if callable(progress) or request.method.cost != "iterative":
        return request.run(progress if callable(progress) else None)
    with progress_bar(request.method.label, enabled=progress is not False) as report:
        return request.run(report)
