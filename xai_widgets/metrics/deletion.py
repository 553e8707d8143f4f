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
deletion), ``"blur"`` (the default of insertion: a Gaussian of σ = 5 on 11×11 taps, per
channel, with mirrored borders), ``"rise_blur"`` (the RISE code's insertion substrate, bit for
bit: see below), ``"mean"`` (each image's per-channel mean), or an image of the input's size
(anything :func:`xai_widgets.images.prepare` reads).

``"rise_blur"`` and ``"blur"`` differ everywhere, not only at the border. The RISE code (its
``evaluation.py``, and the inverse-based project's copy of it) builds its 11×11 kernel by
smoothing a centred delta with ``scipy.ndimage.gaussian_filter(σ = 5)``, whose default
``reflect`` mode folds the Gaussian's tails (±20 pixels) back into the 11 taps: the result is
nearly a box filter (its 121 weights lie within a factor 1.14 of each other; a σ = 5
Gaussian's within 2.7), and the convolution pads with zeros, which in normalised space fades
the border towards the mean colour. On a real photo insertion areas move by about 0.02
between the two. ``"blur"`` stays the default because it is the Gaussian blur the paper
describes, with no faded frame that the model could react to; use ``"rise_blur"`` to compare
with numbers published with the RISE code.

Unlike the RISE code (step of 224 pixels, probability of the class predicted on the image,
in-place edits of a NumPy view), every step of every curve is built at once by indexing (so
any device works), the steps are forwarded in chunks of any size, the score is that of the
explained class, and deletion's last input is shared with insertion's first when both use the
same substrate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import blur
from ..errors import MetricError, ParameterError, did_you_mean
from ..explanation import Explanation
from ..figures import ShowsFigure
from ..kernels.spec import Progress
from ..models import ModelBundle
from ..render import Channels, Polarity
from ..targets import resolve_targets
from . import forward
from .spec import Case, Column, MetricSpec, number
from .subject import Subject, check_chunk_size, ranking_polarity, subject, warn_if_constant

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Kind = Literal["deletion", "insertion"]
Score = Literal["probability", "logit"]
KINDS: tuple[Kind, ...] = ("deletion", "insertion")
SCORES: tuple[Score, ...] = ("probability", "logit")
SUBSTRATES = ("zeros", "blur", "rise_blur", "mean")


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
    check_score(score)
    chunk_size = check_chunk_size(chunk_size, subj.bundle.device)
    height, width = subj.size
    total = height * width
    step = check_pixels_per_step(width if pixels_per_step is None else pixels_per_step,
                                 subj.size)
    counts = torch.tensor([min(k * step, total) for k in range(math.ceil(total / step) + 1)])

    originals = forward.logits(subj.bundle, subj.inputs, chunk_size)
    targets = resolve_targets(subj.target, originals, subj.bundle.class_names)
    index = torch.tensor(targets)
    first = forward.read_targets(originals, index).get(score)
    values = subj.pixel_values(ranking_polarity(subj.display))
    warn_if_constant(values, "the pixels are deleted and inserted in raster order")
    ranks = rank_pixels(values)
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


def measure(case: Case, names: tuple[str, ...]) -> dict[str, Any]:
    """The areas, the curves and their grid (``[pixels per step, pixels]``) of one image
    of a folder evaluation: one call for deletion and insertion."""
    options = case.settings
    kinds = tuple(k for k in KINDS if k in names)
    result = deletion_insertion(
        case.explanation, case.inputs, kinds=kinds, pixels_per_step=options.pixels_per_step,
        deletion_substrate=options.deletion_substrate,
        insertion_substrate=options.insertion_substrate, score=options.score,
        chunk_size=options.chunk_size)
    record: dict[str, Any] = {kind: number(result[kind].auc[0]) for kind in kinds}
    record["curves"] = {kind: [number(v) for v in result[kind].scores[0]] for kind in kinds}
    record["curve_step"] = [result.pixels_per_step, case.inputs.shape[-2] * case.inputs.shape[-1]]
    return record


_PAPER = "Petsiuk, Das, Saenko. RISE. BMVC 2018. arXiv:1806.07421"
SPECS = (
    MetricSpec("deletion", "Deletion", "area under the score as the top pixels are deleted",
               _PAPER, (Column("deletion", "deletion area", "lower"),), "iterative", measure),
    MetricSpec("insertion", "Insertion", "area under the score as the top pixels come back",
               _PAPER, (Column("insertion", "insertion area", "higher"),), "iterative",
               measure),
)


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
    check_substrate(kind)
    if isinstance(kind, str) and kind in SUBSTRATES:
        if kind == "zeros":
            return torch.zeros_like(inputs), kind
        if kind == "blur":
            return gaussian_blur(inputs, blur_size, blur_sigma), kind
        if kind == "rise_blur":
            return rise_blur(inputs), kind
        return inputs.mean(dim=(2, 3), keepdim=True).expand_as(inputs).clone(), kind
    image = subj.bundle.prepare(kind).inputs
    if image.shape[-2:] != inputs.shape[-2:] or len(image) not in (1, len(inputs)):
        raise MetricError(f"the substrate image gives a model input of shape "
                          f"{tuple(image.shape)}; it must be (1 or {len(inputs)}, 3, "
                          f"{inputs.shape[-2]}, {inputs.shape[-1]}) like the images")
    return image.expand_as(inputs).clone(), "image"


def check_score(score: Any) -> None:
    """A :class:`ParameterError` unless ``score`` is ``"probability"`` or ``"logit"``."""
    if score not in SCORES:
        raise ParameterError(f"score must be 'probability' or 'logit', got {score!r}")


def check_pixels_per_step(pixels_per_step: Any, size: tuple[int, int] | None) -> int:
    """``pixels_per_step``, or a :class:`ParameterError` unless it is an integer in
    ``[1, H·W]`` on an input of ``size`` ``(H, W)`` (``None``: the size is not known yet)."""
    total = None if size is None else size[0] * size[1]
    if isinstance(pixels_per_step, bool) or not isinstance(pixels_per_step, int) or \
            pixels_per_step < 1 or (total is not None and pixels_per_step > total):
        within = "an integer >= 1" if size is None else (
            f"an integer in [1, {total}] (the input has {size[0]}×{size[1]} pixels)")
        raise ParameterError(f"pixels_per_step must be {within}, got {pixels_per_step!r}; the "
                             "default is the input's width (RISE: 224 at 224×224)")
    return pixels_per_step


def check_substrate(kind: Any) -> None:
    """A :class:`ParameterError` unless ``kind`` is a substrate's name, the path of an
    existing file, or an image object (checked against the input when it is used)."""
    if isinstance(kind, str) and kind not in SUBSTRATES and not Path(kind).is_file():
        hint = did_you_mean(kind, SUBSTRATES) or "or the path of an image"
        raise ParameterError(f"unknown substrate {kind!r}; use one of "
                             f"{', '.join(map(repr, SUBSTRATES))}, an image; {hint}")


def rise_kernel(size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """The RISE code's blur kernel ``(size, size)`` float32: a centred delta smoothed by
    ``scipy.ndimage.gaussian_filter`` (default ``reflect`` mode and truncation at 4σ)."""
    from scipy.ndimage import gaussian_filter

    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1
    return torch.from_numpy(gaussian_filter(delta, sigma).astype(np.float32))


def rise_blur(inputs: torch.Tensor) -> torch.Tensor:
    """The RISE code's insertion substrate of ``(N, C, H, W)``: :func:`rise_kernel` per
    channel, zero padding (``conv2d(x, kernel, padding=5)``)."""
    channels = inputs.shape[1]
    kernel = rise_kernel().to(inputs.device, inputs.dtype)
    return F.conv2d(inputs, kernel.expand(channels, 1, -1, -1), padding=kernel.shape[-1] // 2,
                    groups=channels)


def gaussian_blur(inputs: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """The default insertion substrate: a per-channel Gaussian blur of ``(N, C, H, W)`` with
    an odd ``size`` × ``size`` kernel and mirrored borders (RISE's own kernel:
    :func:`rise_blur`)."""
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
