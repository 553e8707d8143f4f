"""Layer-wise inverse (Kwon, Koo, Soh, Cho; IEEE TNNLS 2021): explanation by inversion.

Starting from the target class, the network is inverted one layer at a time, from the output
to the input. Two principles shape every layer's inverse ``x̂_l`` (the paper's *consistency*
and *small amount of activation*): it stays inside the box of the forward activation,
``x̂_l = x_l ⊙ r`` with ``r ∈ [0, 1]`` (between 0 and ``x_l``; the forward pass's ReLU and
max-pooling states are re-used), and it is as sparse as the layer above allows::

    last layer (target t):  x̂ = argmin_{box}  logsumexp_{j≠t} z_j(x) − z_t(x)
    other conv/linear:      x̂ = argmin_{box}  ‖ŷ − ReLU(A x + b)‖₂ + λ ‖μ ⊙ x‖₂
                            μ = 1 − Σ_c |ŷ_c| / max Σ_c |ŷ_c|   (1 for linear layers)
    max pooling:            unpooling with the forward switches

(``ŷ``: the inverse above, rescaled to the forward output's norm.) The attribution map is the
fraction of the input the inverse keeps, summed over colour channels::

    h(p) = Σ_c |x̂_c(p)| / (|x_c(p)| + 1e-6)       (raw map (N, H, W); the paper shows h / max h)

with the *amount of activation* (how much of the input is needed) and *re-identification*
(whether the inverse at each layer, fed through the rest of the network, is still classified
as ``t``: top-1 and top-5). Defaults of the authors' code: λ = 0.7, at most 3000 iterations
per layer. See :mod:`._layerwise` for the rules of every layer type and the solver (which
fixes the original's step-size and momentum quirks), :mod:`._chain` for which networks are
accepted (sequential ones: VGG-style; residual networks are refused with a clear error).

Also here: :func:`sparsity_sweep` (amount of activation vs re-identification over a range of
λ: points of the trade-off plot of :func:`xai_widgets.metrics.tradeoff`, and its plot),
:func:`invert_regression` (the inverse of a chosen output region of an image-to-image
network, as the paper did for VDSR super-resolution) and :func:`frequency_bands` (DCT
spectra of focused vs unfocused 8×8 patches, zig-zag order).

Kwon, Koo, Soh, Cho. "Inverse-Based Approach to Explaining and Visualizing Convolutional
Neural Networks." IEEE Transactions on Neural Networks and Learning Systems, 2021.
doi:10.1109/TNNLS.2021.3084757.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import MethodError, ParameterError
from ..figures import ShowsFigure
from ..models import ModelBundle
from ..render import RenderSettings
from ..targets import resolve_targets
from . import _layerwise
from ._chain import Chain, capture
from .spec import KernelContext, KernelResult, MethodSpec, Param

RATIO_EPS = 1e-6


# ------------------------------------------------------------------------- classification


def attribution(inverse: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``h = Σ_c |x̂_c| / (|x_c| + 1e-6)``: ``(N, C, H, W) -> (N, H, W)``."""
    return (inverse.abs() / (inputs.abs() + RATIO_EPS)).sum(1)


def amount_of_activation(inverse: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The authors' "mean L1 norm" of the inverse ``(N,)``: the amount of activation
    (:func:`xai_widgets.metrics.tradeoff.amount_of_activation`) of the kept ratio
    ``|x̂| / (|x| + 1e-6)``."""
    from ..metrics.tradeoff import amount_of_activation as amount  # metrics import kernels

    return amount(inverse.abs() / (inputs.abs() + RATIO_EPS))


def reidentification(chain: Chain, inverse: _layerwise.Inverse, targets: torch.Tensor,
                     k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 and top-``k`` re-identification of the inverse at every unit's input,
    ``(N, U)`` bool each: the inverse fed through the rest of the network.

    From the last unit to the first: where a unit maps its inverse exactly onto the inverse
    above it (max-unpooling, ReLU, reshapes, exact average-unpooling), that layer's logits
    are the ones above, and the rest of the network is not run again."""
    top1, topk = [], []
    layers = inverse.layers
    logits = torch.empty(0)  # those of the inverse at the next unit's input, then this one's
    with torch.no_grad():
        for index in reversed(range(len(layers))):
            output = chain.units[index](layers[index])
            if index + 1 == len(layers):
                logits = output
            elif not torch.equal(output, layers[index + 1]):
                logits = chain.forward_from(index + 1, output)
            ranked = logits.flatten(1).topk(min(k, logits[0].numel()), dim=1).indices
            top1.append(ranked[:, 0] == targets)
            topk.append((ranked == targets[:, None]).any(1))
    return torch.stack(top1[::-1], 1), torch.stack(topk[::-1], 1)


def settings_of(params: dict[str, Any]) -> _layerwise.Settings:
    return _layerwise.Settings(
        sparsity=float(params["sparsity"]), max_iterations=int(params["max_iterations"]),
        tolerance=float(params["tolerance"]), rescale=bool(params["rescale"]),
        seed=int(params["seed"]), report_every=int(params["report_every"]))


def classifier_chain(model: nn.Module, inputs: torch.Tensor) -> Chain:
    """The chain of a classifier (refused clearly when it cannot be inverted)."""
    chain = capture(model, inputs)
    if chain.units[-1].kind != "block" or chain.output.ndim != 2:
        raise MethodError("the layer-wise inverse starts from the logits of a last linear (or "
                          f"convolution) layer, but this network ends in "
                          f"{chain.units[-1].describe()}")
    return chain


def compute(ctx: KernelContext) -> KernelResult:
    bundle = ctx.traces.bundle
    inputs = ctx.traces.any().input.detach()
    if inputs.dtype in (torch.float16, torch.bfloat16):
        raise MethodError(f"layerwise_inverse solves its per-layer problems in float32 or "
                          f"float64, and this model runs in {inputs.dtype}; explain a float32 "
                          "copy of it: copy.deepcopy(model).float()")
    chain = classifier_chain(bundle.model, inputs)
    settings = settings_of(dict(ctx.params))
    targets = ctx.target_index
    count = len(chain)

    def report(index: int, fraction: float, x: torch.Tensor) -> None:
        done = (count - 1 - index + fraction) / count
        unit_inputs = chain.units[index].inputs
        preview = attribution(x, unit_inputs) if x.ndim == 4 else None
        ctx.report(done, preview)

    inverse = _layerwise.invert(chain, settings, targets=targets, report=report)
    top1, top5 = reidentification(chain, inverse, targets)
    heat = attribution(inverse.input, inputs)
    return KernelResult(heat.float(), {
        "inverse": inverse.input,
        "amount_of_activation": amount_of_activation(inverse.input, inputs),
        "reidentified_top1": top1[:, 0],
        "reidentified_top5": top5[:, 0],
        "layer_reidentified_top1": top1,
        "layer_reidentified_top5": top5,
        "layer_names": [unit.name for unit in chain.units],
        "layer_inverses": inverse.layers,
        "iterations": inverse.iterations,
        "converged": inverse.converged,
    })


@dataclass
class SparsitySweep(ShowsFigure):
    """The inverse for several sparsity weights λ, one point each on the trade-off plot
    (amount of activation vs re-identification, as :func:`xai_widgets.metrics.tradeoff`
    draws it for maps): ``amount`` is the mean over images, ``top1``/``top5`` the
    re-identification rates of the input-level inverse."""

    sparsity: np.ndarray
    amount: np.ndarray
    top1: np.ndarray
    top5: np.ndarray

    def figure(self) -> Any:
        """The plot as a figure of its own (a notebook shows it)."""
        return self.plot()

    def plot(self, axes: Any = None) -> Any:
        """A matplotlib figure (or draw into ``axes``): re-identification rate against the
        amount of activation, one point per λ."""
        from matplotlib.figure import Figure

        figure = None
        if axes is None:
            figure = Figure(figsize=(4.5, 3.5), layout="constrained")
            axes = figure.subplots()
        axes.plot(self.amount, self.top1, "o-", label="top-1")
        axes.plot(self.amount, self.top5, "s--", label="top-5")
        for lam, a, r in zip(self.sparsity, self.amount, self.top1, strict=True):
            axes.annotate(f"λ={lam:g}", (a, r), textcoords="offset points", xytext=(4, 4),
                          fontsize=7)
        axes.set_xlabel("amount of activation (mean kept fraction)")
        axes.set_ylabel("re-identification rate")
        axes.set_ylim(-0.05, 1.05)
        axes.legend(fontsize=8)
        return figure if figure is not None else axes.figure


def sparsity_sweep(model: ModelBundle | nn.Module, images: Any,
                   sparsities: Sequence[float] = (0.0, 0.35, 0.7, 1.4, 2.8),
                   target: Any = "top1", **params: Any) -> SparsitySweep:
    """Run the inverse for every sparsity weight on ``images`` (the network is captured and
    its layers' constants estimated once) and collect the trade-off points."""
    bundle = ModelBundle.wrap(model)
    values = SPEC.validate(params)
    if not sparsities:
        raise ParameterError("sparsity_sweep needs at least one sparsity weight")
    for lam in sparsities:
        SPEC.params[0].validate(lam, "sparsity_sweep")
    inputs = bundle.prepare(images).inputs.to(bundle.device)
    chain = classifier_chain(bundle.model, inputs)
    targets = torch.tensor(resolve_targets(target, chain.output.detach(), bundle.class_names),
                           device=inputs.device)
    cache: dict[int, float] = {}
    rows = []
    for lam in sparsities:
        settings = settings_of({**values, "sparsity": lam})
        inverse = _layerwise.invert(chain, settings, targets=targets, lipschitz_cache=cache)
        top1, top5 = reidentification(chain, inverse, targets)
        amount = amount_of_activation(inverse.input, inputs)
        rows.append((float(amount.mean()), float(top1[:, 0].float().mean()),
                     float(top5[:, 0].float().mean())))
    amount_, top1_, top5_ = (np.array(c) for c in zip(*rows, strict=True))
    return SparsitySweep(np.array(sparsities, dtype=float), amount_, top1_, top5_)


# ------------------------------------------------------------------------- regression


@dataclass
class RegressionInverse:
    """The inverse of an output region of an image-to-image network.

    ``inputs`` ``x`` and ``inverse`` ``x̂`` ``(N, C, H, W)``; ``output`` ``y = f(x)`` and
    ``region`` (the part of it inverted, 0/1 of its shape); ``reconstructed`` ``f(x̂)``;
    ``attribution`` ``|x̂ / (x + 1e-6)|`` ``(N, C, H, W)`` (the fraction of each input value
    the region needs).
    """

    inputs: torch.Tensor
    inverse: torch.Tensor
    output: torch.Tensor
    region: torch.Tensor
    reconstructed: torch.Tensor
    attribution: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor

    def psnr(self, peak: float = 1.0) -> dict[str, torch.Tensor]:
        """PSNR (dB, per image) of ``f(x̂)`` against ``y`` inside the region, and of ``x̂``
        against ``x``."""
        inside = self.region.expand_as(self.output)
        count = inside.flatten(1).sum(1).clamp(min=1)
        error = ((self.reconstructed - self.output) * inside).pow(2).flatten(1).sum(1) / count
        kept = (self.inverse - self.inputs).pow(2).flatten(1).mean(1)
        return {"output": _psnr(error, peak), "input": _psnr(kept, peak)}


def _psnr(mse: torch.Tensor, peak: float) -> torch.Tensor:
    return 10 * torch.log10(peak ** 2 / mse.clamp(min=1e-30))


def invert_regression(model: nn.Module, inputs: torch.Tensor, region: Any = None,
                      sparsity: float = 0.15, max_iterations: int = 3000,
                      tolerance: float = 1e-3, rescale: bool = False, seed: int = 0
                      ) -> RegressionInverse:
    """Invert ``region`` of the output of an image-to-image ``model`` (a sequential network,
    e.g. VDSR, whose forward returns the predicted residual).

    ``inputs``: ``(N, C, H, W)`` as the model takes them. ``region``: ``None`` (the whole
    output), a box ``(top, left, bottom, right)`` in output pixels, or a 0/1 tensor
    broadcastable to the output. The inverse starts from ``y ⊙ region`` (the authors' VDSR
    setting λ = 0.15); the last layer is matched without a ReLU when it has none (the
    authors' code matched ``ReLU(conv(x))``, so only the positive part of a residual).
    ``rescale`` is off by default: a region's target rescaled to the norm of the whole
    forward output would ask for more than the region holds (the authors' VDSR code scales
    the target and the box together, which only scales the solution).
    """
    for name, value, low in (("max_iterations", max_iterations, 1), ("sparsity", sparsity, 0)):
        if value < low:
            raise ParameterError(f"invert_regression: {name} must be at least {low}, got "
                                 f"{value}")
    chain = capture(model, inputs)
    output = chain.output.detach()
    mask = _region(region, output)
    settings = _layerwise.Settings(float(sparsity), int(max_iterations), float(tolerance),
                                   bool(rescale), int(seed))
    inverse = _layerwise.invert(chain, settings, start=output * mask)
    x = chain.units[0].inputs
    with torch.no_grad():
        reconstructed = chain.forward_from(0, inverse.input)
    return RegressionInverse(x, inverse.input, output, mask, reconstructed,
                             (inverse.input / (x + RATIO_EPS)).abs(), inverse.iterations,
                             inverse.converged)


def _region(region: Any, output: torch.Tensor) -> torch.Tensor:
    if region is None:
        return torch.ones_like(output)
    if isinstance(region, (tuple, list)) and len(region) == 4:
        top, left, bottom, right = (int(v) for v in region)
        height, width = output.shape[-2:]
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            raise ParameterError(f"region box {tuple(region)} is not inside the output "
                                 f"({height}×{width}); give (top, left, bottom, right)")
        mask = torch.zeros_like(output)
        mask[..., top:bottom, left:right] = 1
        return mask
    mask = torch.as_tensor(region, dtype=output.dtype, device=output.device)
    try:
        return torch.broadcast_to(mask, output.shape).clone()
    except RuntimeError as exc:
        raise ParameterError(f"region of shape {tuple(mask.shape)} does not broadcast to the "
                             f"output {tuple(output.shape)}; give a box (top, left, bottom, "
                             "right) or a 0/1 mask") from exc


# ------------------------------------------------------------------------- frequency bands


def dct_matrix(size: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``(size, size)``: ``coefficients = D @ signal``."""
    n = torch.arange(size, dtype=torch.float64)
    d = torch.cos(math.pi * (2 * n[None] + 1) * n[:, None] / (2 * size)) * math.sqrt(2 / size)
    d[0] /= math.sqrt(2)
    return d


def zigzag(size: int) -> list[tuple[int, int]]:
    """JPEG zig-zag order of a ``size × size`` block: (0,0), (0,1), (1,0), (2,0), (1,1), ..."""
    cells = [(i, j) for i in range(size) for j in range(size)]
    return sorted(cells, key=lambda c: (c[0] + c[1], -c[0] if (c[0] + c[1]) % 2 == 0
                                        else c[0]))


@dataclass
class FrequencyBands(ShowsFigure):
    """Mean absolute DCT coefficient per zig-zag band (``patch²`` bands) of the input
    patches where the attribution is high (``focused``: mean attribution ≥ the mean over
    patches), low (``unfocused``) and of all patches; ``focused_patches`` counts the former."""

    focused: np.ndarray
    unfocused: np.ndarray
    all: np.ndarray
    focused_patches: int
    patches: int

    def figure(self) -> Any:
        """The plot as a figure of its own (a notebook shows it)."""
        return self.plot()

    def plot(self, axes: Any = None) -> Any:
        """Log-scale spectra of the three groups against the band index."""
        from matplotlib.figure import Figure

        figure = None
        if axes is None:
            figure = Figure(figsize=(5, 3.2), layout="constrained")
            axes = figure.subplots()
        bands = np.arange(len(self.all))
        unfocused = self.patches - self.focused_patches
        for values, label in ((self.focused, f"focused ({self.focused_patches})"),
                              (self.unfocused, f"unfocused ({unfocused})"), (self.all, "all")):
            axes.semilogy(bands, np.clip(values, 1e-6, None), label=label)
        axes.set_xlabel("DCT band (zig-zag)")
        axes.set_ylabel("mean |coefficient|")
        axes.legend(fontsize=8)
        return figure if figure is not None else axes.figure


def frequency_bands(image: torch.Tensor, attribution_map: torch.Tensor,
                    patch: int = 8) -> FrequencyBands:
    """DCT frequency bands of focused vs unfocused patches (Kwon et al., regression analysis).

    ``image`` and ``attribution_map``: ``(H, W)`` (or ``(1, H, W)``; colour is averaged),
    the network input and ``|x̂ / x|``. The image is cut into non-overlapping ``patch ×
    patch`` blocks (a remainder at the border is dropped); each block's orthonormal 2-D
    DCT-II is read in zig-zag order.
    """
    picture = _plane(image, "image")
    weights = _plane(attribution_map, "attribution_map")
    if picture.shape != weights.shape:
        raise ParameterError(f"image {tuple(picture.shape)} and attribution_map "
                             f"{tuple(weights.shape)} must have the same size")
    rows, cols = picture.shape[0] // patch, picture.shape[1] // patch
    if rows == 0 or cols == 0:
        raise ParameterError(f"the image ({tuple(picture.shape)}) is smaller than one "
                             f"{patch}×{patch} patch")

    def blocks(plane: torch.Tensor) -> torch.Tensor:
        cut = plane[:rows * patch, :cols * patch]
        return cut.reshape(rows, patch, cols, patch).permute(0, 2, 1, 3).reshape(-1, patch,
                                                                                  patch)

    d = dct_matrix(patch)
    coefficients = (d @ blocks(picture) @ d.T).abs()
    order = zigzag(patch)
    spectra = torch.stack([coefficients[:, i, j] for i, j in order], 1)  # (patches, bands)
    level = blocks(weights).mean(dim=(1, 2))
    focused = level >= level.mean()

    def mean(rows_: torch.Tensor) -> np.ndarray:
        if not bool(rows_.any()):
            return np.zeros(patch * patch)
        return spectra[rows_].mean(0).numpy()

    return FrequencyBands(mean(focused), mean(~focused), spectra.mean(0).numpy(),
                          int(focused.sum()), len(level))


def _plane(values: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    plane = torch.as_tensor(values).detach().cpu().to(torch.float64)
    if plane.ndim == 3:
        plane = plane.mean(0)
    if plane.ndim != 2:
        raise ParameterError(f"{what} must be (H, W) or (C, H, W), got {tuple(plane.shape)}")
    return plane


SPEC = MethodSpec(
    name="layerwise_inverse",
    label="Layer-wise inverse",
    family="optimisation",
    layer_policy="none",
    cost="iterative",
    paper="Kwon, Koo, Soh, Cho. Inverse-Based Approach to Explaining and Visualizing "
          "Convolutional Neural Networks. IEEE TNNLS 2021",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(polarity="positive"),
    params=(
        Param("sparsity", 0.7, float, "λ, weight of the (masked) L2 norm of every layer's "
              "inverse: larger keeps less of the input", 0.0, 100.0),
        Param("max_iterations", 3000, int, "most solver iterations per layer", 1, 1_000_000),
        Param("tolerance", 1e-3, float, "a layer stops when its last 10 objective values "
              "vary by less than this fraction", 0.0, 1.0),
        Param("rescale", True, bool, "rescale each layer's target to the norm of the forward "
              "activation (as the authors' code)"),
        Param("seed", 0, int, "seed of the power iteration that sets the step sizes", 0,
              2**31 - 1),
        Param("report_every", 10, int, "solver iterations between progress reports", 1,
              1_000_000),
    ),
    needs_gradient=False,
    summary="Inverts a sequential network layer by layer from the class, keeping the "
            "smallest part of each activation that explains it; iterative.",
)
