"""What the checks share: reading an answer, comparing tensors, ranking, model inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..models import ModelBundle


def tensor(answer: Any, what: str) -> torch.Tensor:
    """The answer as a float64 tensor (a tensor, array or list); ``TypeError`` otherwise."""
    if isinstance(answer, torch.Tensor):
        return answer.detach().cpu().double()
    if isinstance(answer, (np.ndarray, list, tuple, float, int)):
        return torch.as_tensor(np.asarray(answer, dtype=np.float64))
    raise TypeError(f"{what} should be a tensor, got {type(answer).__name__}")


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """``‖value − reference‖ / ‖reference‖`` (both flattened, float64)."""
    value, reference = value.double().flatten(), reference.double().flatten()
    return float((value - reference).norm() / reference.norm().clamp(min=1e-30))


def shape_message(value: torch.Tensor, expected: tuple[int, ...], what: str) -> str | None:
    """A sentence when ``value`` does not have shape ``expected`` (squeezed shapes match)."""
    if tuple(value.shape) == tuple(expected):
        return None
    if tuple(value.squeeze().shape) == tuple(torch.empty(expected).squeeze().shape):
        return None
    return (f"{what} has shape {tuple(value.shape)}, but it should have shape "
            f"{tuple(expected)}")


def fitted_scale(value: torch.Tensor, reference: torch.Tensor) -> float:
    """The factor ``s`` that makes ``s · reference`` closest to ``value`` (least squares)."""
    value, reference = value.double().flatten(), reference.double().flatten()
    return float(value @ reference / (reference @ reference).clamp(min=1e-30))


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation of two maps of the same size (ties broken by position)."""
    ranks = [x.double().flatten().argsort().argsort().double() for x in (a, b)]
    ra, rb = (r - r.mean() for r in ranks)
    return float(ra @ rb / (ra.norm() * rb.norm()).clamp(min=1e-30))


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Correlation of two maps of the same size."""
    a, b = (x.double().flatten() for x in (a, b))
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (a.norm() * b.norm()).clamp(min=1e-30))


def upsampled(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, h, w)`` -> ``(N, H, W)``, bilinear (as the Explorer shows maps)."""
    return torch.nn.functional.interpolate(maps[:, None].float(), size=size, mode="bilinear",
                                           align_corners=False)[:, 0]


def model_inputs(bundle: ModelBundle, image: Any) -> torch.Tensor:
    """The normalised model input of ``image`` ``(1, 3, H, W)``, as every method sees it."""
    return bundle.prepare(image).inputs


def logits(bundle: ModelBundle, inputs: torch.Tensor) -> torch.Tensor:
    """The model's logits for ``inputs``, without autograd, in eval mode."""
    from ..scope import eval_mode

    with torch.no_grad(), eval_mode(bundle.model):
        return bundle.model(inputs.to(bundle.device)).detach().cpu().double()


def class_index(bundle: ModelBundle, target: Any) -> int:
    """A class name or index -> the index."""
    if isinstance(target, str):
        names = list(bundle.class_names or ())
        return names.index(target) if target in names else -1
    return int(target)


def trace(bundle: ModelBundle, image: Any, layers: Any = (), rule: str = "gradient") -> Any:
    """A :class:`~xai_widgets.trace.Trace` of ``image`` that records ``layers`` (a name or a
    list): one forward pass under ``rule`` whose activations and gradients you can read,
    ``trace.activation(layer)`` and ``trace.gradient((class_index,), layer)``."""
    from ..trace import Trace

    names = [layers] if isinstance(layers, str) else list(layers)
    copy = [n for n in names if bundle.layers[n].mutated_later]
    return Trace(bundle, model_inputs(bundle, image), rule, record=names,  # type: ignore[arg-type]
                 copy=copy)


def input_gradients(bundle: ModelBundle, inputs: torch.Tensor, target: Any) -> torch.Tensor:
    """``∂y_c / ∂x`` for every input of the batch ``(K, 3, H, W)``: the plain gradient of
    class ``target``'s logit (one forward and one backward of the batch)."""
    from ..scope import eval_mode

    c = class_index(bundle, target)
    x = inputs.detach().to(bundle.device).clone().requires_grad_(True)
    with torch.enable_grad(), eval_mode(bundle.model):
        score = bundle.model(x)[:, c].sum()
        (gradient,) = torch.autograd.grad(score, x)
    return gradient.detach().cpu()
