"""Shared machinery of the iterative methods (integrated gradients, SmoothGrad, RISE, Score-CAM).

* :func:`chunks`: ``[start, stop)`` ranges of ``chunk_size`` jobs; memory is bounded by the
  chunk, whatever the number of steps, samples or masks.
* :func:`inference`: the model in eval mode under ``torch.inference_mode()`` for a loop of
  forward passes that need no gradient (restored in ``finally``, also when a progress callback
  raises :class:`~xai_widgets.kernels.spec.Cancelled` between chunks).
* :func:`generator`: a local, seeded ``torch.Generator`` (never the global RNG).
* :func:`baseline`: the reference inputs of path and masking methods, in the model's
  normalised input space: ``black`` (a black photo pushed through the normalisation),
  ``mean`` (zero: the dataset mean colour), ``blurred``, ``uniform`` noise, or a user tensor.
* :func:`quadrature`: points and weights of the Riemann and Gauss–Legendre rules on [0, 1].
* :func:`chunk_rows` and :func:`out_of_memory_as_parameter_error`: a ``chunk_size`` larger
  than memory allows is a :class:`~xai_widgets.errors.ParameterError` that says what to use,
  before the first chunk when the chunk's own tensors cannot fit (free memory from
  ``/proc/meminfo`` or ``torch.cuda.mem_get_info``), or when an allocation fails in a pass
  (the model's activations), never a raw allocator error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ..blur import gaussian_blur
from ..errors import ModelError, ParameterError
from ..images import Preprocessing
from ..models import ModelBundle
from ..scope import eval_mode

BASELINES = ("black", "mean", "blurred", "uniform")
QUADRATURES = ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid",
               "gausslegendre")
SCORES = ("probability", "logit")


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of at most ``size`` jobs out of ``total``."""
    for start in range(0, total, size):
        yield start, min(start + size, total)


def chunk_rows(chunk_size: int, jobs: int, bytes_per_job: int, device: torch.device,
               method: str) -> int:
    """The inputs per pass: ``chunk_size``, at most ``jobs``. A :class:`ParameterError` that
    names a chunk size that fits when that many inputs need more than the memory available
    on ``device``, counting ``bytes_per_job`` each (a lower bound: the chunk's own tensors)."""
    rows = max(1, min(int(chunk_size), jobs))
    available = available_memory(device)
    if available is None or rows <= 1 or rows * bytes_per_job <= available:
        return rows
    fits = max(1, available // bytes_per_job // 2)
    raise ParameterError(
        f"{method}: chunk_size={chunk_size} needs at least {_size(rows * bytes_per_job)} on "
        f"{device} ({_size(bytes_per_job)} per input), more than the {_size(available)} "
        f"available; use chunk_size={fits} or less (the result does not depend on it)")


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device`` (``None`` where that is unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free) + int(cached)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as info:
                for line in info:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:  # not Linux
            return None
    return None


@contextmanager
def out_of_memory_as_parameter_error(rows: int, device: torch.device,
                                     method: str) -> Iterator[None]:
    """An allocation that fails inside (a pass over ``rows`` inputs) becomes a
    :class:`ParameterError` that asks for a smaller ``chunk_size``."""
    try:
        yield
    except ParameterError:  # an inner method's own (a SmoothGrad base) says it already
        raise
    except Exception as exc:
        if not _is_out_of_memory(exc):
            raise
        hint = (f"use a smaller chunk_size, e.g. {max(1, rows // 4)} (the result does not "
                "depend on it)" if rows > 1 else "even one input does not fit: free memory "
                "or use a smaller input")
        raise ParameterError(f"{method}: a pass over {rows} inputs ran out of memory on "
                             f"{device}; {hint}") from exc


def _is_out_of_memory(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it was raised from, is an allocator's failure."""
    while exc is not None:
        if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or \
                "can't allocate memory" in str(exc):
            return True
        exc = exc.__cause__
    return False


def _size(count: int) -> str:
    """Bytes for a person: ``'2.4 GB'``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


def generator(seed: int, device: torch.device) -> torch.Generator:
    """A local generator seeded with ``seed`` on ``device``."""
    return torch.Generator(device=device).manual_seed(int(seed))


def model_input(bundle: ModelBundle, inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` detached, on the model's device and in its parameters' dtype."""
    parameter = next(bundle.model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else inputs.dtype
    return inputs.detach().to(device=bundle.device, dtype=dtype)


@contextmanager
def inference(bundle: ModelBundle) -> Iterator[None]:
    """Eval mode and ``torch.inference_mode()`` for a loop of forward passes."""
    with eval_mode(bundle.model), torch.inference_mode():
        yield


def logits_of(bundle: ModelBundle, inputs: torch.Tensor) -> torch.Tensor:
    """The model's logits ``(N, classes)`` (call inside :func:`inference` or a grad scope)."""
    logits = bundle.model(inputs)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ModelError("the model must return logits (N, classes); wrap it in a module "
                         "whose forward returns them")
    return logits


def target_score(logits: torch.Tensor, targets: torch.Tensor, score: str) -> torch.Tensor:
    """The target class's ``probability`` (softmax) or ``logit`` per row, float32 ``(N,)``."""
    rows = torch.arange(len(targets), device=logits.device)
    if score == "probability":
        return logits.float().softmax(dim=1)[rows, targets]
    return logits.float()[rows, targets]


# ---------------------------------------------------------------------------- baselines


def baseline(kind: Any, inputs: torch.Tensor, preprocessing: Preprocessing, *, method: str,
             seed: int = 0, blur_sigma: float = 5.0) -> torch.Tensor:
    """The reference input for each image of ``inputs`` ``(N, 3, H, W)``, normalised space.

    ``kind``: ``"black"``, ``"mean"``, ``"blurred"`` (Gaussian blur of each image, ``blur_sigma``
    pixels of the model input), ``"uniform"`` (one noise photo, uniform in [0, 1] per RGB
    value, seeded, shared by the batch), or a tensor of shape ``(3, H, W)``, ``(1, 3, H, W)`` or
    ``(N, 3, H, W)`` in the model's normalised input space.
    """
    if isinstance(kind, torch.Tensor):
        return _user_baseline(kind, inputs, method)
    if kind == "black":
        return preprocessing.normalise(torch.zeros_like(inputs))
    if kind == "mean":
        return torch.zeros_like(inputs)
    if kind == "blurred":
        if blur_sigma <= 0:
            raise ParameterError(f"{method}: blur_sigma must be positive for the blurred "
                                 f"baseline, got {blur_sigma}")
        return gaussian_blur(inputs, blur_sigma)
    if kind == "uniform":
        noise = torch.rand(inputs.shape[1:], generator=generator(seed, inputs.device),
                           device=inputs.device, dtype=inputs.dtype)
        return preprocessing.normalise(noise).expand_as(inputs).contiguous()
    raise ParameterError(f"{method}: unknown baseline {kind!r}; use one of "
                         f"{', '.join(map(repr, BASELINES))} or a tensor shaped like the input")


def _user_baseline(tensor: torch.Tensor, inputs: torch.Tensor, method: str) -> torch.Tensor:
    n, c, h, w = inputs.shape
    shape = tuple(tensor.shape)
    if shape not in ((c, h, w), (1, c, h, w), (n, c, h, w)):
        raise ParameterError(
            f"{method}: the baseline has shape {shape}, the input {tuple(inputs.shape)}; give "
            f"a tensor of shape ({c}, {h}, {w}), (1, {c}, {h}, {w}) or ({n}, {c}, {h}, {w}) in "
            "the model's normalised input space (e.g. bundle.prepare(photo).inputs), or one "
            f"of {', '.join(map(repr, BASELINES))}")
    if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
        raise ParameterError(f"{method}: the baseline must be a finite float tensor")
    return tensor.detach().to(inputs).expand_as(inputs).contiguous()


# ---------------------------------------------------------------------------- quadrature


def quadrature(rule: str, steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Points ``α_k`` in [0, 1] and weights ``w_k`` (summing to 1) of ``rule`` with ``steps``
    points, float64: ``∫_0^1 g(α) dα ≈ Σ_k w_k g(α_k)``."""
    if steps < 1:
        raise ParameterError(f"{method}: n_steps must be at least 1, got {steps}")
    k = np.arange(steps, dtype=np.float64)
    weights = np.full(steps, 1.0 / steps)
    if rule == "riemann_right":
        points = (k + 1) / steps
    elif rule == "riemann_left":
        points = k / steps
    elif rule == "riemann_middle":
        points = (k + 0.5) / steps
    elif rule == "riemann_trapezoid":
        if steps < 2:
            raise ParameterError(f"{method}: the trapezoid rule needs n_steps >= 2, got {steps}")
        points = k / (steps - 1)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] *= 0.5
    elif rule == "gausslegendre":
        nodes, gauss = np.polynomial.legendre.leggauss(steps)
        points, weights = (nodes + 1) / 2, gauss / 2
    else:
        raise ParameterError(f"{method}: unknown integration rule {rule!r}; use one of "
                             f"{', '.join(map(repr, QUADRATURES))}")
    return points, weights
