"""Deletion and insertion curves and their areas.

Petsiuk, Das, Saenko. "RISE: Randomized Input Sampling for Explanation of Black-box Models."
BMVC 2018. arXiv:1806.07421.

The map, upsampled to the input size, ranks the ``HW`` input pixels, most important first
(ties keep raster order). *Deletion* starts from the image and, ``p`` pixels per step (all
channels at once), replaces the next pixels by a substrate; *insertion* starts from a
substrate and puts the image's pixels back in the same order. After each step the score of
the target class (probability or logit) is read: ``S = ceil(HW / p)`` steps give ``S + 1``
points at the fractions ``c_k / HW``, ``c_k = min(k p, HW)``. The area under a curve is the
trapezoid rule over those fractions on [0, 1] (when ``p`` divides ``HW`` this is RISE's
``(Σ_k s_k − s_0/2 − s_S/2) / S``). A faithful map makes deletion fall fast (small area) and
insertion rise fast (large area).

Substrates: ``"zeros"`` (zero in normalised space, i.e. the dataset's mean colour: RISE's
deletion), ``"blur"`` (Gaussian 11×11, σ = 5, per channel: RISE's insertion, but with
reflected borders: RISE pads with zeros, which in normalised space fades the border towards
the mean colour), ``"mean"`` (each image's per-channel mean), or an image of the input's
size (anything :func:`xai_widgets.images.prepare` reads).

Unlike the RISE code (METHODS.md §4.6), every step of every curve is built at once by
indexing (no in-place NumPy edits, so any device works), the steps are forwarded in chunks of
any size, the score is that of the explained class, and deletion's last input is shared with
insertion's first when both use the same substrate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from .. import blur
from ..errors import ParameterError, did_you_mean
from ..explanation import Explanation
from ..figures import ShowsFigure
from ..kernels.spec import Progress
from ..models import ModelBundle
from ..render import Channels, Polarity
from ..targets import resolve_targets
from . import forward
from .subject import MetricError, Subject, check_chunk_size, ranking_polarity, subject

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Kind = Literal["deletion", "insertion"]
Score = Literal["probability", "logit"]
KINDS: tuple[Kind, ...] = ("deletion", "insertion")
SCORES: tuple[Score, ...] = ("probability", "logit")
SUBSTRATES = ("zeros", "blur", "mean")


@dataclass(frozen=True)
class Curve:
    """One deletion or insertion curve per image.

    ``fractions``: ``(K,)`` share of pixels changed at each point, from 0 to 1;
    ``scores``: ``(N, K)`` the target's probability or logit there.
    """

    kind: Kind
    fractions: torch.Tensor
    scores: torch.Tensor
    substrate: str
    score: Score

    @property
    def auc(self) -> torch.Tensor:
        """Area under each curve, ``(N,)`` (trapezoid rule on [0, 1])."""
        return torch.trapezoid(self.scores, self.fractions, dim=1)

    def __repr__(self) -> str:
        areas = ", ".join(f"{a:.3f}" for a in self.auc.tolist())
        return (f"Curve({self.kind}, {self.fractions.numel()} points, {self.score}, "
                f"substrate {self.substrate!r}, auc [{areas}])")


@dataclass(frozen=True)
class DeletionInsertion(ShowsFigure):
    """The curves asked for, by kind, and what they explain. ``forwards``: model inputs
    evaluated (the images themselves included)."""

    curves: dict[str, Curve]
    targets: tuple[int, ...]
    target_names: tuple[str, ...]
    pixels_per_step: int
    forwards: int

    def __getitem__(self, kind: str) -> Curve:
        if kind not in self.curves:
            raise KeyError(f"no {kind!r} curve here; computed: {', '.join(self.curves)}")
        return self.curves[kind]

    @property
    def deletion(self) -> Curve:
        return self["deletion"]

    @property
    def insertion(self) -> Curve:
        return self["insertion"]

    def areas(self) -> dict[str, list[float]]:
        """``{kind: [area per image]}``."""
        return {kind: curve.auc.tolist() for kind, curve in self.curves.items()}

    def __repr__(self) -> str:
        areas = "; ".join(f"{kind} area {', '.join(f'{a:.3f}' for a in values)}"
                          for kind, values in self.areas().items())
        return (f"DeletionInsertion({', '.join(self.target_names)}: {areas}; "
                f"{self.pixels_per_step} pixels per step, {self.forwards} inputs)")

    def figure(self, index: int = 0, title: str | None = None) -> Figure:
        """A matplotlib figure of image ``index``'s curves, with their areas."""
        from matplotlib.figure import Figure

        figure = Figure(figsize=(4.2, 3.2), layout="constrained")
        axes = figure.subplots()
        for kind, curve in self.curves.items():
            colour = "#c0392b" if kind == "deletion" else "#2471a3"
            x, y = curve.fractions.numpy(), curve.scores[index].numpy()
            axes.plot(x, y, color=colour, label=f"{kind}: area {float(curve.auc[index]):.3f}")
            axes.fill_between(x, y, alpha=0.15, color=colour)
        score = next(iter(self.curves.values())).score
        axes.set_xlabel("fraction of pixels deleted / inserted")
        axes.set_ylabel(f"{score} of {self.target_names[index]}")
        axes.set_xlim(0, 1)
        if score == "probability":
            axes.set_ylim(0, 1.02)
        axes.legend(fontsize=8)
        axes.set_title(title or "deletion and insertion", fontsize=9)
        return figure


def deletion_insertion(
    source: Explanation | ModelBundle | nn.Module, images: Any = None, maps: Any = None,
    target: Any = None, *, kinds: Sequence[Kind] = KINDS, pixels_per_step: int | None = None,
    deletion_substrate: Any = "zeros", insertion_substrate: Any = "blur",
    score: Score = "probability", channels: Channels | None = None,
    polarity: Polarity | None = None, chunk_size: int | None = None,
    progress: Progress | None = None,
) -> DeletionInsertion:
    """Deletion and insertion curves of maps, every step batched.

    ``source``, ``images``, ``maps``, ``target``: an Explanation and its images, or a model,
    images ``(N, 3, H, W)`` and raw maps ``(N, h, w)``/``(N, C, h, w)`` (target: the explained
    class; default the predicted one). ``pixels_per_step``: default the input width (224 at
    224×224: RISE's protocol, 224 steps). ``score``: ``"probability"`` or ``"logit"``.
    ``channels``/``polarity``: how the raw map ranks pixels (default: as the method displays
    it; a ``positive`` display ranks by the raw signed values, which orders the same pixels
    the same way and breaks the ReLU's ties). ``chunk_size``: inputs per forward pass (memory
    is bounded by it; default :func:`~.forward.default_chunk_size`, 2 on a CPU, 32 on a GPU).
    ``progress(fraction, None)`` is called after every chunk and may raise
    :class:`~xai_widgets.kernels.spec.Cancelled`.
    """
    subj = subject(source, images, maps, target, channels, polarity)
    kinds = _check_kinds(kinds)
    if score not in SCORES:
        raise ParameterError(f"score must be 'probability' or 'logit', got {score!r}")
    chunk_size = check_chunk_size(chunk_size, subj.bundle.device)
    height, width = subj.size
    total = height * width
    step = width if pixels_per_step is None else pixels_per_step
    if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= total:
        raise ParameterError(f"pixels_per_step must be an integer in [1, {total}] (the input "
                             f"has {height}×{width} pixels), got {pixels_per_step!r}")
    counts = torch.tensor([min(k * step, total) for k in range(math.ceil(total / step) + 1)])

    originals = forward.logits(subj.bundle, subj.inputs, chunk_size)
    targets = resolve_targets(subj.target, originals, subj.bundle.class_names)
    index = torch.tensor(targets)
    first = forward.read_targets(originals, index).get(score)
    ranks = rank_pixels(subj.pixel_values(ranking_polarity(subj.display)))
    plan = _Plan(subj, kinds, counts, deletion_substrate, insertion_substrate)
    scores = forward.target_scores(subj.bundle, plan.build(ranks, subj.bundle.device),
                                   index[plan.image], chunk_size, progress).get(score)
    fractions = counts.float() / total
    curves: dict[str, Curve] = {kind: Curve(kind, fractions, plan.curve(kind, scores, first),
                                            plan.names[kind], score) for kind in kinds}
    return DeletionInsertion(curves, targets, tuple(subj.bundle.class_name(t) for t in targets),
                             step, len(subj) + len(plan.image))


def deletion(source: Explanation | ModelBundle | nn.Module, images: Any = None,
             maps: Any = None, target: Any = None, **options: Any) -> Curve:
    """The deletion curves alone (see :func:`deletion_insertion` for the options)."""
    return deletion_insertion(source, images, maps, target, kinds=("deletion",),
                              **options).deletion


def insertion(source: Explanation | ModelBundle | nn.Module, images: Any = None,
              maps: Any = None, target: Any = None, **options: Any) -> Curve:
    """The insertion curves alone (see :func:`deletion_insertion` for the options)."""
    return deletion_insertion(source, images, maps, target, kinds=("insertion",),
                              **options).insertion


def rank_pixels(values: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` -> ``(N, H·W)`` long: each pixel's place in descending order (0 = the
    most important); ties keep raster order."""
    flat = values.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    places = torch.arange(flat.shape[1]).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, places)


def substrate(kind: Any, subj: Subject, blur_size: int = 11, blur_sigma: float = 5.0
              ) -> tuple[torch.Tensor, str]:
    """The substrate ``(N, 3, H, W)`` (normalised space) for ``subj.inputs`` and its name."""
    inputs = subj.inputs
    if isinstance(kind, str) and kind in SUBSTRATES:
        if kind == "zeros":
            return torch.zeros_like(inputs), kind
        if kind == "blur":
            return gaussian_blur(inputs, blur_size, blur_sigma), kind
        return inputs.mean(dim=(2, 3), keepdim=True).expand_as(inputs).clone(), kind
    if isinstance(kind, str) and not Path(kind).exists():
        hint = did_you_mean(kind, SUBSTRATES) or "or the path of an image"
        raise ParameterError(f"unknown substrate {kind!r}; use one of "
                             f"{', '.join(map(repr, SUBSTRATES))}, an image; {hint}")
    image = subj.bundle.prepare(kind).inputs
    if image.shape[-2:] != inputs.shape[-2:] or len(image) not in (1, len(inputs)):
        raise MetricError(f"the substrate image gives a model input of shape "
                          f"{tuple(image.shape)}; it must be (1 or {len(inputs)}, 3, "
                          f"{inputs.shape[-2]}, {inputs.shape[-1]}) like the images")
    return image.expand_as(inputs).clone(), "image"


def gaussian_blur(inputs: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's insertion substrate: a per-channel Gaussian blur of ``(N, C, H, W)`` with an
    odd ``size`` × ``size`` kernel and mirrored borders (RISE pads with zeros instead)."""
    if size < 1 or size % 2 == 0 or sigma <= 0:
        raise ParameterError(f"a blur needs an odd size >= 1 and sigma > 0, got size {size}, "
                             f"sigma {sigma}")
    return blur.gaussian_blur(inputs, sigma, radius=size // 2, border="reflect")


class _Plan:
    """The distinct inputs the curves need, as jobs: ``runs[j] = (image, base, fill)``
    (which image, and the rows of ``sources`` shown by its unchanged and by its changed
    pixels) and ``count[j]`` (pixels changed); ``points[kind]`` maps each curve point to its
    job (-1: the image itself, whose score is known)."""

    def __init__(self, subj: Subject, kinds: Sequence[Kind], counts: torch.Tensor,
                 deletion_substrate: Any, insertion_substrate: Any) -> None:
        n = len(subj)
        removed, removed_name = substrate(deletion_substrate, subj) if "deletion" in kinds \
            else (subj.inputs[:0], "")
        added, added_name = substrate(insertion_substrate, subj) if "insertion" in kinds \
            else (subj.inputs[:0], "")
        self.names = {"deletion": removed_name, "insertion": added_name}
        self.sources = torch.cat([subj.inputs, removed, added])
        shared = len(kinds) == 2 and torch.equal(removed, added)
        steps = len(counts) - 1
        image: list[int] = []
        base: list[int] = []
        fill: list[int] = []
        count: list[int] = []
        self.points = {kind: torch.full((n, steps + 1), -1, dtype=torch.long) for kind in kinds}

        def job(i: int, b: int, f: int, c: int) -> int:
            image.append(i)
            base.append(b)
            fill.append(f)
            count.append(c)
            return len(image) - 1

        for i in range(n):
            if "deletion" in kinds:
                for k in range(1, steps + 1):
                    self.points["deletion"][i, k] = job(i, i, n + i, int(counts[k]))
            if "insertion" in kinds:
                added_row = n + len(removed) + i
                for k in range(steps):
                    self.points["insertion"][i, k] = \
                        self.points["deletion"][i, steps] if shared and k == 0 else \
                        job(i, added_row, i, int(counts[k]))
        self.runs = list(zip(image, base, fill, strict=True))
        self.image = torch.tensor(image, dtype=torch.long)
        self.count = torch.tensor(count, dtype=torch.int32)

    def build(self, ranks: torch.Tensor, device: torch.device) -> forward.Build:
        """``build(start, stop)`` for :func:`forward.target_scores`, on ``device``.

        Consecutive jobs of one image and kind share their two sources, so each run of them
        is one broadcast ``where`` into a buffer reused from chunk to chunk: the only
        memory written per chunk is the chunk's inputs.
        """
        height, width = self.sources.shape[-2:]
        sources = self.sources.to(device)
        ranks = ranks.to(device=device, dtype=torch.int32)
        count = self.count.to(device)
        buffer: list[torch.Tensor] = []

        def inputs(start: int, stop: int) -> torch.Tensor:
            if not buffer or len(buffer[0]) < stop - start:
                buffer[:] = [sources.new_empty((stop - start, *sources.shape[1:]))]
            out = buffer[0][:stop - start]
            first = start
            while first < stop:
                last = first
                while last < stop and self.runs[last] == self.runs[first]:
                    last += 1
                i, base, fill = self.runs[first]
                changed = ranks[i][None] < count[first:last, None]
                torch.where(changed.view(-1, 1, height, width), sources[fill], sources[base],
                            out=out[first - start:last - start])
                first = last
            return out

        return inputs

    def curve(self, kind: Kind, scores: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` scores of ``kind``'s points; ``first``: the images' own scores."""
        points = self.points[kind]
        return torch.where(points >= 0, scores[points.clamp(min=0)], first[:, None])


def _check_kinds(kinds: Sequence[str]) -> tuple[Kind, ...]:
    if isinstance(kinds, str):
        kinds = (kinds,)
    chosen = tuple(k for k in KINDS if k in kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not chosen:
        raise ParameterError(f"kinds must name 'deletion' and/or 'insertion', got {kinds!r}")
    return chosen
