"""What the checks share: reading an answer, comparing it with the toolkit's value and
phrasing the verdict (:func:`compare`), correlations, model inputs."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np
import torch

from ..models import ModelBundle
from .core import Exercise, Unreadable, Verdict


def tensor(answer: Any, what: str) -> torch.Tensor:
    """The answer as a float64 tensor (a tensor, array, list or number); :class:`Unreadable`
    otherwise."""
    if isinstance(answer, torch.Tensor):
        return answer.detach().cpu().double()
    if not isinstance(answer, (np.ndarray, list, tuple, float, int)):
        raise Unreadable(f"{_code(what)} should be a tensor (or an array, a list of numbers), "
                         f"got {type(answer).__name__}")
    try:
        return torch.as_tensor(np.asarray(answer, dtype=np.float64))
    except (TypeError, ValueError) as error:
        raise Unreadable(f"{_code(what)} could not be read as an array of numbers ({error})"
                         ) from error


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """``‖value − reference‖ / ‖reference‖`` (both flattened, float64)."""
    value, reference = value.double().flatten(), reference.double().flatten()
    return float((value - reference).norm() / reference.norm().clamp(min=1e-30))


def answer_tensor(answer: Any, shape: tuple[int, ...], what: str, hint: str = ""
                  ) -> torch.Tensor:
    """The answer as a float64 tensor of ``shape`` (an answer whose squeezed shape matches is
    reshaped); :class:`Unreadable` with a sentence (and ``hint``) for a wrong type or shape,
    NaN or infinite values."""
    value = tensor(answer, what)
    expected = tuple(shape)
    if tuple(value.squeeze().shape) != tuple(torch.empty(expected).squeeze().shape):
        layout = (", the right number of values in another layout (check the order of the "
                  "dimensions)" if value.numel() == math.prod(expected) else "")
        raise Unreadable(f"{_code(what)} has shape {tuple(value.shape)}, but it should have "
                         f"shape {expected}{layout}" + (f" — {hint}" if hint else ""))
    value = value.reshape(expected)
    bad = ~torch.isfinite(value)
    if bad.any():
        nan = int(value.isnan().sum())
        first = tuple(int(i) for i in bad.nonzero()[0])
        kinds = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (int(bad.sum()) - nan,
                             "infinite")) if n)
        raise Unreadable(f"{_code(what)} has {kinds} value(s) of {value.numel()} (the first at "
                         f"index {first}): a division by zero? (x / 0 is infinite, 0 / 0 is "
                         "NaN, and NaN spreads through every sum it enters)")
    return value


Measure = Literal["relative", "largest"]


def compare(task: Exercise, answer: Any, reference: torch.Tensor, what: str, *,
            tolerance: float, right: str, source: str = "the toolkit's",
            mistakes: Iterable[tuple[torch.Tensor, str]] = (),
            diagnose: Callable[[torch.Tensor], str | None] | None = None,
            shape_hint: str = "", hint: str = "", measure: Measure = "relative") -> Verdict:
    """The verdict on a tensor answer, against ``reference`` (the toolkit's value).

    The answer is read to the reference's shape (:func:`answer_tensor`; ``shape_hint`` says
    how to get it right). Its error is the relative L2 error, or with ``measure="largest"``
    the largest difference of one element. Within ``tolerance``: right, ``right`` and the
    error. Otherwise the ``why`` of the first of ``mistakes`` ``(value, why)`` the answer
    matches within ``tolerance``, or what ``diagnose(answer)`` says, or "close" (within ten
    times the tolerance), or how far it is from ``source`` — then ``hint``."""
    value = answer_tensor(answer, tuple(reference.shape), what, shape_hint)
    error = _error(value, reference, measure)
    if error <= tolerance:
        return task.right(f"{right} ({_ERRORS[measure]} {error:.1e})")
    for candidate, why in mistakes:
        if _error(value, candidate, measure) <= tolerance:
            return task.wrong(why)
    diagnosis = diagnose(value) if diagnose is not None else None
    if diagnosis:
        return task.wrong(diagnosis)
    distance = f"{_code(what)} differs from {source} by {_amount(error, measure)}"
    if not value.any():
        distance = f"{_code(what)} is 0 everywhere"
    elif error <= 10 * tolerance:
        distance = (f"close: {distance}, and the check allows {_amount(tolerance, measure, '')}"
                    "; look for a small slip (a constant, one step, a lower precision)")
    return task.wrong(distance + (f": {hint}" if hint else ""))


_ERRORS = {"relative": "relative error", "largest": "largest difference"}


def _error(value: torch.Tensor, reference: torch.Tensor, measure: Measure) -> float:
    if measure == "largest":
        return float((value.double() - reference.double()).abs().max())
    return relative_error(value, reference)


def _amount(error: float, measure: Measure, unit: str = " (relative L2)") -> str:
    """``error`` in words: ``"3.1% (relative L2)"``, ``"110× its size (relative L2)"``,
    ``"up to 0.23"``."""
    if measure == "largest":
        return f"up to {error:.2g}"
    if error >= 10:
        return f"{error:.3g}× its size" + unit
    return (f"{error:.1%}" if error >= 1e-3 else f"{error:.1e}") + unit


def _code(what: str) -> str:
    """A variable's name as code (`` `saliency` ``), a phrase as it is."""
    return f"`{what}`" if what.isidentifier() else what


def fitted_scale(value: torch.Tensor, reference: torch.Tensor) -> float:
    """The factor ``s`` that makes ``s · reference`` closest to ``value`` (least squares)."""
    value, reference = value.double().flatten(), reference.double().flatten()
    return float(value @ reference / (reference @ reference).clamp(min=1e-30))


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Correlation of two maps of the same size."""
    a, b = (x.double().flatten() for x in (a, b))
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (a.norm() * b.norm()).clamp(min=1e-30))


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
