"""The layer-wise inverse of a chain (Kwon et al. 2021): per-unit rules and the solver.

Walking the :class:`~._chain.Chain` backwards, each unit turns the inverse ``y`` at its
output into the inverse ``x`` at its input, always inside the *box* of the recorded forward
value ``v`` of that input: ``x = v ⊙ r`` with ``r ∈ [0, 1]`` elementwise, i.e. ``x`` between
0 and ``v`` (for the non-negative inputs of hidden layers this is the paper's
``0 ≤ x ≤ [v]_+``, for the image its sign-consistent box).

* block (affine ``A``, optional ReLU ``σ``), the solver::

      min_x ‖ŷ − σ(A x)‖₂ + λ ‖μ ⊙ x‖₂   s.t. x in the box,   ŷ = y · ‖v_out‖ / ‖y‖

  (``ŷ``: ``y`` rescaled to the forward output's norm when ``rescale``; ``μ = 1 − s / max s``
  with ``s = Σ_c |y_c|`` nearest-resized to the input for spatial blocks, ``μ = 1`` otherwise;
  a small leak below the ReLU where ``ŷ > 0``, see :func:`block_residual`), started from the
  forward activation ``v``;
* the classifier's last block, for target ``t``: ``min_x logsumexp_{j≠t} z_j − z_t`` with
  ``z = A x`` (the log-odds of ``t``, a smooth upper bound of the paper's margin
  ``max_{j≠t} z_j − z_t``), no sparsity term;
* max pooling: the inverse goes to the forward pass's winners (switches), zeros elsewhere;
* average pooling: each input keeps the ratio ``y / v_out`` of its window (exact when the
  windows do not overlap, checked numerically); otherwise the solver with ``λ = 0``;
* ReLU alone: ``x = y ⊙ 1[v > 0]``; reshapes: ``x = reshape(y)``.

The solver is accelerated projected gradient (FISTA momentum ``(k − 1)/(k + 2)``, gradient at
the extrapolated point, restart when the objective or the step goes uphill, the step halved
for good when a plain step goes uphill), one objective and gradient evaluation per iteration
(the elementwise part of the gradient by hand, autograd only through the layer's affine
operations), with a majorise-minimise step per image,
``1 / (L / ‖r‖ + λ max μ² / ‖μ ⊙ x‖)`` (``L = ‖A‖²`` by power iteration), which suits the
un-squared norms of the paper at any scale. A unit stops when the standard deviation of its
last 10 objective values falls below ``tolerance`` times their mean, or after
``max_iterations``; each image stops on its own, so a batch gives the images' own results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._chain import Chain, Unit

WINDOW = 10  # objective values over which convergence is judged
POWER_ITERATIONS = 20
#: the power iteration of a spatially local block runs on a crop of its input whose output
#: has at least this many positions per dimension (see :func:`lipschitz_shape`)
LIPSCHITZ_EXTENT = 16
#: operations that act the same at any spatial size (a block of only these can be cropped)
_LOCAL = {"conv1d", "conv2d", "conv3d", "batch_norm", "pad", "relu", "relu_"}
EPS = 1e-20
LEAK = 0.1  # see block_residual

#: ``report(fraction_of_this_unit, current_x)``; may raise ``Cancelled``
UnitReport = Callable[[float, torch.Tensor], None]


@dataclass(frozen=True)
class Settings:
    """``sparsity`` λ; ``max_iterations`` and ``tolerance`` of each unit's solve; ``rescale``
    targets to the forward output's norm; ``seed`` of the power iteration."""

    sparsity: float = 0.7
    max_iterations: int = 3000
    tolerance: float = 1e-3
    rescale: bool = True
    seed: int = 0
    report_every: int = 10


@dataclass
class Inverse:
    """The inverse at the input of every unit, ``(N, ...)`` each, and per unit and image the
    solver's iterations (0 for closed-form units) and whether it converged."""

    chain: Chain
    layers: list[torch.Tensor]
    iterations: torch.Tensor  # (N, U) long
    converged: torch.Tensor  # (N, U) bool

    @property
    def input(self) -> torch.Tensor:
        return self.layers[0]


def box(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)``: between 0 and ``values``."""
    return values.clamp(max=0), values.clamp(min=0)


def _norm(v: torch.Tensor) -> torch.Tensor:
    """Per-image Euclidean norm, never 0 (``√(‖v‖² + 1e-20)``): ``(N, ...) -> (N,)``."""
    return (torch.linalg.vector_norm(v.flatten(1), dim=1).square() + EPS).sqrt()


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.ndim - 1)))


def lipschitz_shape(unit: Unit, like: torch.Tensor) -> tuple[int, ...]:
    """The input shape of the power iteration: one image of ``like``'s shape, cropped (top
    left) for a block of convolutions, batch norms, paddings and ReLUs to the smallest of
    16, 32, 64, ... pixels whose output keeps :data:`LIPSCHITZ_EXTENT` positions per
    dimension.

    The crop's operator is a compression of the full one (embedding the crop at the top left
    in zeros reproduces its output there), so ``‖A_crop‖ ≤ ‖A‖`` and ``‖A‖`` is approached as
    the crop grows: on VGG16's 3×3 convolutions (random weights, 224 px) the 16-px crop's
    ``‖A‖²`` is within 1.6 % of the full one (within 3 % on the random convolutions of the
    tests), on AlexNet's (11×11 stride-4 first convolution: a 128-px crop) within 1.3 %,
    well under the factor 1.1 of
    :func:`lipschitz` (and the solver halves a step that goes uphill), at a fraction of the
    cost of 20 passes at full resolution.
    """
    full = (1, *like.shape[1:])
    if like.ndim < 3 or not all(step.op in _LOCAL for step in unit.steps):
        return full
    size = LIPSCHITZ_EXTENT
    while size < max(full[2:]):
        shape = (*full[:2], *(min(size, extent) for extent in full[2:]))
        with torch.no_grad():
            output = unit.affine(torch.zeros(shape, dtype=like.dtype, device=like.device))
        if min(output.shape[2:]) >= LIPSCHITZ_EXTENT:
            return shape
        size *= 2
    return full


def lipschitz(unit: Unit, like: torch.Tensor, seed: int) -> float:
    """``‖A‖²`` of the unit's affine part (largest eigenvalue of ``AᵀA``, power iteration on
    one input of :func:`lipschitz_shape`), times 1.1 for safety."""
    shape = lipschitz_shape(unit, like)
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(shape, generator=generator).to(like)
    zero = torch.zeros(shape, dtype=like.dtype, device=like.device)
    with torch.no_grad():
        offset = unit.affine(zero)
    value = torch.ones(())
    for _ in range(POWER_ITERATIONS):
        v = v / v.norm().clamp(min=1e-30)
        with torch.enable_grad():
            v.requires_grad_(True)
            u = unit.affine(v) - offset
            (v,) = torch.autograd.grad(u, v, u.detach())
        value = v.norm()
    return float(value) * 1.1


def initial(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The start of every solve: the forward activation itself (the far corner of the box
    from 0), so that every ReLU starts in the state of the forward pass."""
    return low + high


#: ``evaluate(x) -> (objective (N,), step (N,), gradient like x)``
Evaluate = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def solve(evaluate: Evaluate, x0: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
          settings: Settings, report: UnitReport | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Accelerated projected gradient; one ``evaluate`` per iteration.

    Returns ``x``, the iterations each image ran ``(N,)`` and whether it converged ``(N,)``.
    """
    n = x0.shape[0]
    x = x0.clone()
    delta = torch.zeros_like(x0)  # x_k − x_{k−1}
    momentum = torch.zeros(n, device=x0.device)
    scale = torch.ones(n, device=x0.device)
    previous = torch.full((n,), float("inf"), device=x0.device)
    active = torch.ones(n, dtype=torch.bool, device=x0.device)
    history = torch.zeros(n, WINDOW, device=x0.device)
    iterations = torch.zeros(n, dtype=torch.long, device=x0.device)
    first: torch.Tensor | None = None
    everyone = True  # no image has stopped yet (checked every WINDOW iterations)
    for it in range(settings.max_iterations):
        beta = ((momentum - 1) / (momentum + 2)).clamp(min=0)
        z = torch.addcmul(x, _per_image(beta, x), delta) if it else x
        value, step, grad = evaluate(z)
        value = value.detach().float()
        # a plain projected-gradient step that went uphill: the step was too long (a kink of
        # a ReLU or a norm); halve it for good. Any uphill move: restart the momentum.
        increased = value > previous
        scale = torch.where(increased & (beta == 0), scale * 0.5, scale)
        previous = value
        x_new = torch.addcmul(z, _per_image(-scale * step, z), grad).clamp_(low, high)
        moved = x_new - x
        uphill = increased | (torch.linalg.vecdot(grad.flatten(1), moved.flatten(1)) > 0)
        momentum = torch.where(uphill, 0.0, momentum + 1)
        if everyone:
            x, delta = x_new, moved
        else:
            keep = _per_image(active, x)
            x, delta = torch.where(keep, x_new, x), torch.where(keep, moved, 0)
        iterations += active
        history[:, it % WINDOW] = torch.where(active, value, history[:, it % WINDOW])
        first = value.abs() if first is None else first
        if (it + 1) % WINDOW == 0:
            spread, level = history.std(1), history.mean(1).abs()
            done = spread <= settings.tolerance * torch.maximum(level, 1e-3 * first) + 1e-30
            active &= ~done
            everyone = bool(active.all())
            if not bool(active.any()):
                break
        if report is not None and (it + 1) % settings.report_every == 0:
            report((it + 1) / settings.max_iterations, x)
    return x, iterations, ~active


def sparsity_weight(y: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``μ = 1 − s / max s``, ``s = Σ_c |y_c|``, nearest-resized to the input's spatial size
    ``(N, 1, H, W)``; 1 where the block is not spatial."""
    if y.ndim != 4 or inputs.ndim != 4:
        return torch.ones((inputs.shape[0],) + (1,) * (inputs.ndim - 1), dtype=inputs.dtype,
                          device=inputs.device)
    s = y.abs().sum(1, keepdim=True)
    mu = 1 - s / s.amax(dim=(2, 3), keepdim=True).clamp(min=1e-30)
    return F.interpolate(mu, size=inputs.shape[-2:], mode="nearest")


def block_residual(unit: Unit, target: torch.Tensor, pre: torch.Tensor, leak: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual ``r = ŷ − σ(A x)`` at ``pre = A x`` and ``(dσ/d pre) ⊙ r``, with a leak
    where the target wants a ReLU on but it is off: there ``r = ŷ − LEAK · A x``.

    ``leak`` is ``LEAK · 1[ŷ > 0]``. Equal to the paper's residual wherever no such unit is
    off, and it keeps a gradient for the units that are (without it a unit switched off during
    the solve can never come back: on TinyNet's blocks the leak turns residuals of 4–30 %
    into 1e-7 for reachable targets, and costs < 1 % of the paper's objective)."""
    if not unit.rectified:
        r = target - pre
        return r, r
    r = target - torch.addcmul(pre.clamp(min=0), pre.clamp(max=0), leak)
    on = torch.ops.aten.threshold_backward(r, pre, 0)  # r where the ReLU is on, else 0
    return r, torch.lerp(on, r, leak)


def invert_block(unit: Unit, y: torch.Tensor, sparsity: float, settings: Settings,
                 lipschitz_constant: float, report: UnitReport | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``argmin ‖ŷ − σ(A x)‖ + λ ‖μ ⊙ x‖`` over the box of the unit's input."""
    low, high = box(unit.inputs)
    target = y
    if settings.rescale:
        target = y * _per_image(_norm(unit.output) / (_norm(y) + 1e-10), y)
    mu = sparsity_weight(y, unit.inputs)
    mu_top = mu.flatten(1).amax(1).pow(2)
    floor = 1e-2 * _norm(mu * high)
    leak = LEAK * (target > 0).to(target.dtype)

    def evaluate(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # the elementwise part by hand, autograd only through the affine operations
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            pre = unit.affine(leaf)
        r, through = block_residual(unit, target, pre.detach(), leak)
        residual = _norm(r)
        seed = through.mul_(_per_image(-1 / residual, r))
        (grad,) = torch.autograd.grad(pre, leaf, seed)
        curvature = lipschitz_constant / residual.clamp(min=1e-10)
        value = residual
        if sparsity > 0:
            weighted = mu * x
            penalty = _norm(weighted)
            grad.addcmul_(mu, weighted.mul_(_per_image(sparsity / penalty, x)))
            curvature = curvature + sparsity * mu_top / torch.maximum(penalty, floor)
            value = value + sparsity * penalty
        return value, 1 / curvature, grad

    return solve(evaluate, initial(low, high), low, high, settings, report)


def invert_margin(unit: Unit, targets: torch.Tensor, settings: Settings,
                  lipschitz_constant: float, report: UnitReport | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``argmin logsumexp_{j≠t} z_j − z_t``, ``z = unit(x)``, over the box of its input."""
    low, high = box(unit.inputs)
    rows = torch.arange(len(targets), device=targets.device)
    step = torch.full((len(targets),), 1 / lipschitz_constant, device=targets.device)

    def evaluate(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            logits = unit(leaf).flatten(1).float()
            target = logits[rows, targets]
            others = logits.index_put((rows, targets), torch.tensor(float("-inf"),
                                                                    device=logits.device))
            value = others.logsumexp(1) - target
            (grad,) = torch.autograd.grad(value.sum(), leaf)
        return value.detach(), step, grad

    return solve(evaluate, initial(low, high), low, high, settings, report)


def unpool_max(unit: Unit, y: torch.Tensor) -> torch.Tensor:
    """The max-pooling inverse: ``y`` at the forward pass's winners, zeros elsewhere (where
    windows overlap and share a winner, the largest value)."""
    indices = unit.switches()
    flat_y, flat_i = y.flatten(2), indices.flatten(2)
    plane = torch.zeros((*unit.inputs.shape[:2], unit.inputs[0, 0].numel()), dtype=y.dtype,
                        device=y.device)
    plane = plane.scatter_reduce(2, flat_i, flat_y, reduce="amax", include_self=False)
    return plane.view_as(unit.inputs)


def spread_ratio(unit: Unit, ratio: torch.Tensor) -> torch.Tensor | None:
    """Each input position gets its window's ratio (``None`` if the pooling's windows
    overlap or are uneven, checked on the recorded values)."""
    inputs = unit.inputs
    if inputs.ndim != 4:
        return None
    if ratio.ndim == 2:
        ratio = ratio[:, :, None, None]
    if ratio.ndim != 4 or ratio.shape[:2] != inputs.shape[:2]:
        return None
    (h, w), (oh, ow) = inputs.shape[-2:], ratio.shape[-2:]
    if h % oh or w % ow:
        return None
    spread = ratio.repeat_interleave(h // oh, 2).repeat_interleave(w // ow, 3)
    probe = torch.rand(ratio.shape, generator=torch.Generator().manual_seed(0)).to(ratio)
    wide = probe.repeat_interleave(h // oh, 2).repeat_interleave(w // ow, 3)
    with torch.no_grad():
        expected = probe * unit.output.view(ratio.shape)
        exact = torch.allclose(unit(inputs * wide).view(ratio.shape), expected,
                               rtol=1e-4, atol=1e-6 * float(unit.output.abs().max()) + 1e-12)
    return spread if exact else None


def unpool_average(unit: Unit, y: torch.Tensor, settings: Settings, lipschitz_of: Callable[[],
                   float], report: UnitReport | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The average-pooling inverse (see the module docstring)."""
    output = unit.output
    ratio = torch.where(output != 0, y / torch.where(output != 0, output, 1), 0).clamp(0, 1)
    spread = spread_ratio(unit, ratio)
    if spread is not None:
        n = y.shape[0]
        return (unit.inputs * spread, torch.zeros(n, dtype=torch.long, device=y.device),
                torch.ones(n, dtype=torch.bool, device=y.device))
    exact = Settings(0.0, settings.max_iterations, settings.tolerance, False, settings.seed,
                     settings.report_every)
    return invert_block(unit, y, 0.0, exact, lipschitz_of(), report)


def invert(chain: Chain, settings: Settings, targets: torch.Tensor | None = None,
           start: torch.Tensor | None = None,
           report: Callable[[int, float, torch.Tensor], None] | None = None,
           lipschitz_cache: dict[int, float] | None = None) -> Inverse:
    """Invert ``chain`` from its output: a classifier for ``targets`` (``(N,)``), or a
    regression network from ``start`` (the inverse at its output, e.g. a masked output).

    ``report(unit_index, fraction_of_unit, current_x)`` is called during long solves and
    after each unit; ``lipschitz_cache`` (unit index -> ``‖A‖²``) is reused across calls.
    """
    units = chain.units
    n = chain.output.shape[0]
    cache = {} if lipschitz_cache is None else lipschitz_cache
    layers: list[torch.Tensor] = [unit.inputs for unit in units]
    iterations = torch.zeros(n, len(units), dtype=torch.long, device=chain.output.device)
    converged = torch.ones(n, len(units), dtype=torch.bool, device=chain.output.device)
    y = start
    for index in reversed(range(len(units))):
        unit = units[index]

        def constant(unit: Unit = unit, index: int = index) -> float:
            if index not in cache:
                cache[index] = lipschitz(unit, unit.inputs, settings.seed)
            return cache[index]

        def progress(fraction: float, x: torch.Tensor, index: int = index) -> None:
            if report is not None:
                report(index, fraction, x)

        if y is None:
            assert targets is not None
            if unit.kind != "block":
                raise ValueError("a classifier's chain ends in a block")
            x, its, done = invert_margin(unit, targets, settings, constant(), progress)
        elif unit.kind == "block":
            x, its, done = invert_block(unit, y, settings.sparsity, settings, constant(),
                                        progress)
        elif unit.kind == "avgpool":
            x, its, done = unpool_average(unit, y, settings, constant, progress)
        else:
            its = torch.zeros(n, dtype=torch.long, device=y.device)
            done = torch.ones(n, dtype=torch.bool, device=y.device)
            if unit.kind == "maxpool":
                x = unpool_max(unit, y)
            elif unit.kind == "relu":
                x = y * (unit.inputs > 0)
            else:
                x = y.reshape(unit.inputs.shape)
        layers[index], iterations[:, index], converged[:, index] = x.detach(), its, done
        progress(1.0, x)
        y = x.detach()
    return Inverse(chain, layers, iterations, converged)
