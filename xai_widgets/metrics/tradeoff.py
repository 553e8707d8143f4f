"""Amount of activation vs. re-identification: the inverse-based project's trade-off.

Kwon, Koo, Soh, Cho. "Inverse-Based Approach to Explaining and Visualizing Convolutional
Neural Networks." IEEE TNNLS 2021 (the inverse-based project). An explanation keeps part of
the input, ``x̂ = x ⊙ ĥ`` (normalised space, so a dropped pixel takes the dataset's mean
colour); a good one keeps little (small *amount of activation*, :func:`amount_of_activation`)
and still lets the model
*re-identify* the class (``argmax f(x̂) = t``). For attribution maps ``ĥ`` is the map as
displayed (channels reduced, polarity applied, a signed map's positive part), upsampled to
the input and divided by its maximum, so ``ĥ ∈ [0, 1]``.

One map gives one point; ``thresholds`` give a curve per map, ``ĥ_τ = ĥ · [ĥ ≥ τ]`` (τ = 0 is
the map itself), and averaging over images gives the trade-off plot: amount on x,
re-identification rate on y, one line per method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ParameterError
from ..explanation import Explanation
from ..figures import ShowsFigure
from ..kernels.spec import Progress
from ..models import ModelBundle
from ..render import Channels, Polarity, normalise
from ..targets import resolve_targets
from . import forward
from .spec import Case, Column, MetricSpec, number
from .subject import check_chunk_size, subject

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Tradeoff(ShowsFigure):
    """Per image and threshold, ``(N, T)`` each: ``amount`` (of ``ĥ_τ``), ``probability``
    of the target on ``x ⊙ ĥ_τ``, re-identified as the ``top1`` class / among the ``top5``.
    ``thresholds``: ``(T,)``."""

    thresholds: torch.Tensor
    amount: torch.Tensor
    probability: torch.Tensor
    top1: torch.Tensor
    top5: torch.Tensor
    targets: tuple[int, ...]

    def rates(self) -> dict[str, list[float]]:
        """Means over the images, one value per threshold: ``amount``, ``top1``, ``top5``."""
        return {name: getattr(self, name).float().mean(dim=0).tolist()
                for name in ("amount", "top1", "top5")}

    def __repr__(self) -> str:
        rates = self.rates()
        points = ", ".join(f"τ={t:g}: amount {a:.3f}, top-1 {r:.2f}" for t, a, r in zip(
            self.thresholds.tolist(), rates["amount"], rates["top1"], strict=True))
        return f"Tradeoff({len(self.targets)} images; {points})"

    def figure(self, label: str = "map") -> Figure:
        """The trade-off plot of these maps (see :func:`tradeoff_figure`)."""
        return tradeoff_figure({label: self})


def tradeoff_figure(results: Mapping[str, Tradeoff], rate: str = "top1") -> Figure:
    """One line per method: amount of activation (x) vs. re-identification rate (y),
    ``rate`` being ``"top1"`` or ``"top5"``; a point per threshold."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2, 3.2), layout="constrained")
    axes = figure.subplots()
    for label, result in results.items():
        rates = result.rates()
        axes.plot(rates["amount"], rates[rate], "o-", label=label)
    axes.set_xlabel("amount of activation")
    axes.set_ylabel(f"re-identification rate ({rate.replace('top', 'top-')})")
    axes.set_xlim(0, 1)
    axes.set_ylim(-0.02, 1.02)
    axes.legend(fontsize=8)
    return figure


def amount_of_activation(kept: torch.Tensor) -> torch.Tensor:
    """The inverse-based project's *amount of activation* of what an explanation keeps: the
    kept fraction of the input ``(N, C, H, W)`` (``ĥ`` of a map, one channel; ``|x̂| / |x|``
    of an inverse), per channel minus its minimum, summed over channels, divided by its
    maximum, averaged over pixels: ``(N,)`` in [0, 1]. The one definition of the toolkit
    (this trade-off and ``layerwise_inverse``)."""
    shifted = (kept - kept.flatten(2).amin(2)[:, :, None, None]).sum(1)
    top = shifted.flatten(1).amax(1).clamp(min=1e-30)
    return (shifted / top[:, None, None]).flatten(1).mean(1)


def check_thresholds(thresholds: Sequence[float]) -> list[float]:
    """``thresholds`` as floats; a :class:`ParameterError` unless they are values in [0, 1)."""
    try:
        levels = [float(t) for t in thresholds]
    except (TypeError, ValueError):
        levels = []
    if not levels or not all(0 <= t < 1 for t in levels):
        raise ParameterError(f"thresholds must be values in [0, 1), got {thresholds!r}")
    return levels


def measure(case: Case, _names: tuple[str, ...]) -> dict[str, Any]:
    """``reidentified@τ`` (1/0) and ``amount@τ`` of one image, for every threshold τ."""
    result = tradeoff(case.explanation, case.inputs, thresholds=case.settings.thresholds,
                      chunk_size=case.settings.chunk_size)
    record: dict[str, Any] = {}
    for i, level in enumerate(result.thresholds.tolist()):
        record[f"reidentified@{level:g}"] = number(result.top1[0, i])
        record[f"amount@{level:g}"] = number(result.amount[0, i])
    return record


SPECS = (
    MetricSpec("tradeoff", "Trade-off", "is the class re-identified from the part of the image "
               "the map keeps, and how much does it keep?",
               "Kwon, Koo, Soh, Cho. Inverse-Based Approach to Explaining and Visualizing "
               "Convolutional Neural Networks. IEEE TNNLS 2021",
               (Column("reidentified", "re-identified (top-1)", "higher", proportion=True),
                Column("amount", "amount of activation", "lower")), "pass", measure),
)


def tradeoff(source: Explanation | ModelBundle | nn.Module, images: Any = None,
             maps: Any = None, target: Any = None, *, thresholds: Sequence[float] = (0.0,),
             channels: Channels | None = None, polarity: Polarity | None = None,
             chunk_size: int | None = None, progress: Progress | None = None) -> Tradeoff:
    """Amount of activation and re-identification of ``x ⊙ ĥ_τ`` for every threshold.

    Arguments as :func:`~xai_widgets.metrics.deletion_insertion`; ``thresholds``: values of
    τ in [0, 1). The target defaults to the explained class (the predicted one for bare maps).
    """
    subj = subject(source, images, maps, target, channels, polarity)
    chunk_size = check_chunk_size(chunk_size, subj.bundle.device)
    levels = torch.tensor(check_thresholds(thresholds), dtype=torch.float32)
    shown = subj.display.polarity
    unit = normalise(subj.pixel_values("positive" if shown == "signed" else shown),
                     signed=False)                                            # (N, H, W)
    kept = unit[:, None] * (unit[:, None] >= levels[None, :, None, None])      # (N, T, H, W)
    amount = amount_of_activation(kept.flatten(0, 1)[:, None]).view(kept.shape[:2])
    originals = forward.logits(subj.bundle, subj.inputs, chunk_size)
    targets = resolve_targets(subj.target, originals, subj.bundle.class_names)
    count = len(levels)
    device = subj.bundle.device
    inputs, masks = subj.inputs.to(device), kept.flatten(0, 1).to(device)

    def build(start: int, stop: int) -> torch.Tensor:
        rows = torch.arange(start, stop, device=device)
        return inputs[rows // count] * masks[start:stop, None]

    scores = forward.target_scores(subj.bundle, build,
                                   torch.tensor(targets).repeat_interleave(count),
                                   chunk_size, progress)
    shape = (len(subj), count)
    return Tradeoff(levels, amount, scores.probability.view(shape), scores.rank.view(shape) == 0,
                    scores.rank.view(shape) < 5, targets)
