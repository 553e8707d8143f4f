"""The one-call API (:func:`insecurities`, :func:`analyse`) and
:class:`Analysis`, the cached state behind it and behind the widget: one forward pass per batch
(a :class:`~xai_widgets.trace.TraceSet`), the class maps per attribution and the difficulty
maps per (difficulty, attribution), each computed once.

Wang, Vasconcelos. "Deliberative Explanations: visualizing network insecurities." NeurIPS 2019.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ImageError, ParameterError, did_you_mean
from ..models import ModelBundle
from ..scope import eval_mode, model_lock
from ..trace import Trace, TraceSet
from . import ambiguity
from .maps import (
    ATTRIBUTIONS,
    batched_gradients,
    class_maps,
    difficulty_map,
    integrated,
    quadratic_term,
)
from .result import Difficulty, InsecurityResult, Pair
from .scores import DifficultySpec, resolve_difficulty

#: ``progress(fraction, **series)``; it may raise :class:`~xai_widgets.kernels.spec.Cancelled`
Progress = Callable[..., None]


@dataclass
class DifficultyMaps:
    """The difficulty of a batch: ``score`` ``(N,)``, ``map`` ``(N, h, w)`` and the two terms of
    the gradient–Hessian map (``second`` is ``None`` for the other attributions)."""

    score: torch.Tensor
    map: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor | None = None
    closed_form: bool | None = None


def check_attribution(attribution: str) -> str:
    if attribution not in ATTRIBUTIONS:
        hint = did_you_mean(str(attribution), ATTRIBUTIONS)
        raise ParameterError(
            f"unknown attribution {attribution!r}; accepted: 'gradient' (activation × "
            "gradient per cell), 'integrated_gradients' (layer IG, black baseline) or "
            f"'gradient_hessian' (difficulty map with its second-order term)"
            f"{'; ' + hint if hint else ''}")
    return attribution


def _positive_int(value: Any, name: str, low: int, high: int | None = None,
                  what: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low \
            or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ParameterError(f"{name} must be an integer {bound}{what}, got {value!r}")
    return value


class Analysis:
    """Insecurities of a batch of images under one model and layer, cached.

    One forward pass with autograd (kept), the ``top_classes`` most probable classes of each
    image, then on demand: the class maps per attribution (one batched backward for all
    classes, shared by every difficulty) and the difficulty maps per difficulty and attribution.
    """

    def __init__(self, model: ModelBundle | nn.Module, images: Any, layer: str | None = None,
                 top_classes: int = 5, display_scale: int = 2,
                 traces: TraceSet | None = None) -> None:
        self.bundle = ModelBundle.wrap(model)
        self.prepared = self.bundle.prepare(images, display_scale)
        self.layer = self.bundle.layers.resolve(layer, self.bundle.model)
        if traces is not None and (traces.bundle is not self.bundle
                                   or not traces.with_graph
                                   or traces.inputs.shape != self.prepared.inputs.shape):
            raise ParameterError("traces= must be a TraceSet with a graph of these images "
                                 "through this bundle (e.g. the Explorer's); or leave it out")
        # the caller's traces (an Explorer's: its forward is not paid twice), or one-shot ones
        # that record only the layers asked for; the graph is kept either way, since the
        # backward passes here are our own
        self.traces = traces if traces is not None else TraceSet(
            self.bundle, self.prepared.inputs, [self.layer], one_shot=True)
        trace = self.traces.get("gradient", [self.layer])
        self.logits = trace.logits.detach()
        classes = int(self.logits.shape[1])
        if isinstance(top_classes, int) and not isinstance(top_classes, bool) \
                and top_classes > classes:
            raise ParameterError(
                f"top_classes={top_classes} but this model has {classes} classes; give at most "
                f"{classes} (the original used 5)")
        self.top_classes = _positive_int(top_classes, "top_classes", 2, None,
                                         " (a pair needs two classes)")
        self.classes = self.logits.topk(self.top_classes, dim=1).indices
        self._class_maps: dict[str, torch.Tensor] = {}
        self._difficulty: dict[tuple[Any, ...], DifficultyMaps] = {}

    def __len__(self) -> int:
        return len(self.prepared)

    @property
    def activation(self) -> torch.Tensor:
        return self.traces.get("gradient", [self.layer]).activation(self.layer)

    def spec(self, difficulty: Any, predictor: nn.Module | None = None,
             hp_score: str | None = None) -> DifficultySpec:
        return resolve_difficulty(difficulty, predictor, self.layer, hp_score)

    def maps(self, spec: DifficultySpec, attribution: str = "gradient", ig_steps: int = 50,
             chunk_size: int = 8, hessian_chunk: int = 64,
             progress: Progress | None = None) -> tuple[torch.Tensor, DifficultyMaps]:
        """Class maps ``(N, R, h, w)`` and the difficulty of ``spec`` under ``attribution``,
        from the cache or from the passes still missing (shared between the two)."""
        check_attribution(attribution)
        class_key = "integrated_gradients" if attribution == "integrated_gradients" \
            else "gradient"
        difficulty_key = (*spec.key, attribution, ig_steps if class_key != "gradient" else 0)
        need_classes = class_key not in self._class_maps
        need_difficulty = difficulty_key not in self._difficulty
        if need_classes or need_difficulty:
            layers = [self.layer] + ([spec.layer] if spec.layer else [])
            trace = self.traces.get("gradient", layers)
            activation = trace.activation(self.layer)
            classes = self.classes if need_classes else None
            wanted = spec if need_difficulty else None
            if class_key == "gradient":
                rows = batched_gradients(trace, self.layer, classes, wanted)
                if rows.classes is not None:
                    self._class_maps[class_key] = class_maps(rows.classes, activation)
                if wanted is not None:
                    assert rows.difficulty is not None and rows.score is not None
                    first = difficulty_map(rows.difficulty, activation)
                    second = closed = None
                    total = first
                    if attribution == "gradient_hessian":
                        quadratic, closed = quadratic_term(trace, self.layer, spec, rows,
                                                           hessian_chunk)
                        second = 0.5 * quadratic.abs()
                        total = first + second
                    self._difficulty[difficulty_key] = DifficultyMaps(
                        rows.score.double(), total, first, second, closed)
            else:
                _positive_int(ig_steps, "ig_steps", 1, 100_000)
                _positive_int(chunk_size, "chunk_size", 1, 100_000)
                report = None if progress is None else (lambda f: progress(f))
                class_ig, difficulty_ig = integrated(
                    self.bundle, self.prepared.inputs, activation, self.layer, classes, wanted,
                    ig_steps, chunk_size, report)
                if class_ig is not None:
                    self._class_maps[class_key] = class_ig
                if wanted is not None and difficulty_ig is not None:
                    score = self._score(trace, wanted)
                    self._difficulty[difficulty_key] = DifficultyMaps(score, difficulty_ig,
                                                                      difficulty_ig)
        return self._class_maps[class_key], self._difficulty[difficulty_key]

    def _score(self, trace: Trace, spec: DifficultySpec) -> torch.Tensor:
        if spec.name != "hp":
            return spec.score_from_logits(trace.logits.detach().double())
        assert spec.predictor is not None and spec.layer is not None
        with model_lock(spec.predictor), eval_mode(spec.predictor), torch.no_grad():
            z = spec.predict(trace.activation(spec.layer)).double()
        return spec.score_from_z(z)

    def result(self, index: int = 0, difficulty: Any = "entropy",
               attribution: str = "gradient", normalise: bool = True, per_cell: int = 3,
               predictor: nn.Module | None = None, hp_score: str | None = None,
               ig_steps: int = 50, chunk_size: int = 8,
               progress: Progress | None = None) -> InsecurityResult:
        """The insecurities of image ``index``."""
        return self.results(difficulty, attribution, normalise, per_cell, predictor, hp_score,
                            ig_steps, chunk_size, progress, indices=[index])[0]

    def results(self, difficulty: Any = "entropy", attribution: str = "gradient",
                normalise: bool = True, per_cell: int = 3,
                predictor: nn.Module | None = None, hp_score: str | None = None,
                ig_steps: int = 50, chunk_size: int = 8, progress: Progress | None = None,
                indices: Sequence[int] | None = None) -> list[InsecurityResult]:
        if not isinstance(normalise, bool):
            raise ParameterError(f"normalise must be True or False, got {normalise!r}")
        _positive_int(per_cell, "per_cell", 2, None, " (classes ranked at each cell)")
        spec = self.spec(difficulty, predictor, hp_score)
        maps, hard = self.maps(spec, attribution, ig_steps, chunk_size, progress=progress)
        maps = maps.cpu()  # results live on the CPU (pictures, JSON), whatever the model's device
        hard = DifficultyMaps(hard.score.cpu(), hard.map.cpu(), hard.first.cpu(),
                              None if hard.second is None else hard.second.cpu(),
                              hard.closed_form)
        probabilities = self.logits.double().softmax(dim=1).cpu()
        out = []
        for i in range(len(self)) if indices is None else indices:
            top = [(int(c), self.bundle.class_name(int(c)), float(probabilities[i, int(c)]))
                   for c in self.classes[i]]
            difficulty_out = Difficulty(
                spec.name, spec.label, float(hard.score[i]), hard.map[i].float(), attribution,
                hard.first[i].float() if hard.second is not None else None,
                None if hard.second is None else hard.second[i].float(), hard.closed_form)
            pairs = rank_pairs(maps[i], hard.map[i], top, normalise, per_cell)
            out.append(InsecurityResult(
                self.bundle, self.prepared.names[i], self.layer, attribution, normalise,
                per_cell, top, maps[i].float(), difficulty_out, pairs,
                self.prepared.display[i], tuple(self.prepared.inputs.shape[-2:]),  # type: ignore[arg-type]
                self.logits[i].cpu()))
        return out


def rank_pairs(maps: torch.Tensor, difficulty: torch.Tensor,
               top: list[tuple[int, str, float]], normalise: bool, per_cell: int) -> list[Pair]:
    """The ambiguous pairs of one image, ranked by score (then by rank order).

    ``mass`` is the mean insecurity over the cells; the ``score`` weighs it by the geometric
    mean of the two probabilities, ``mass · √(p_a p_b)``: with each map scaled by its own
    maximum, a class the network barely considers would otherwise rank as high as the two it
    hesitates between."""
    prepared = ambiguity.prepare_maps(maps, normalise)
    hard = ambiguity.prepare_maps(difficulty, normalise)
    found = ambiguity.pair_set(prepared, per_cell, require_positive=normalise)
    pairs = []
    for (r, s), cells in found.items():
        m = ambiguity.insecurity(prepared[r], prepared[s], hard)
        mass = float(m.mean())
        pairs.append(Pair(top[r][0], top[s][0], (top[r][1], top[s][1]), (r, s),
                          mass * (top[r][2] * top[s][2]) ** 0.5, mass, cells, m.float()))
    return sorted(pairs, key=lambda p: (-p.score, p.ranks))


def analyse(model: ModelBundle | nn.Module, images: Any, difficulty: Any = "entropy",
            attribution: str = "gradient", top_classes: int = 5, layer: str | None = None,
            normalise: bool = True, **options: Any) -> list[InsecurityResult]:
    """:func:`insecurities` of every image of a batch (one forward, one batched backward)."""
    return Analysis(model, images, layer, top_classes).results(
        difficulty, attribution, normalise, **options)


def insecurities(model: ModelBundle | nn.Module, image: Any, difficulty: Any = "entropy",
                 attribution: str = "gradient", top_classes: int = 5,
                 layer: str | None = None, normalise: bool = True, *, per_cell: int = 3,
                 predictor: nn.Module | None = None, hp_score: str | None = None,
                 ig_steps: int = 50, chunk_size: int = 8,
                 progress: Progress | None = None) -> InsecurityResult:
    """Where, and between which classes, the network hesitates on ``image``.

    Deliberative explanations (Wang & Vasconcelos, "Deliberative Explanations: visualizing
    network insecurities", NeurIPS 2019): a difficulty score ``s(x)`` and attribution maps at
    ``layer`` (default: the last spatial layer) of the ``top_classes`` most probable classes
    and of ``s``; at each cell the ``per_cell`` strongest classes form candidate pairs; the
    insecurity of a pair ``(a, b)`` is ``â_a ⊙ â_b ⊙ d̂`` (each map normalised by its maximum
    first unless ``normalise=False``, the original behaviour).

    ``difficulty``: ``"entropy"``, ``"cs"`` (1 − max p), ``"hp"`` with ``predictor=`` (or the
    predictor module itself; ``hp_score`` ``"sigmoid"`` or ``"logit"`` says which output is
    ``s``). ``attribution``: ``"gradient"`` (activation × gradient per cell),
    ``"integrated_gradients"`` (``ig_steps`` points, black baseline, ``chunk_size`` inputs
    per pass, ``progress(fraction)`` after each chunk) or ``"gradient_hessian"`` (the
    difficulty map with its second-order term). Returns an :class:`InsecurityResult`
    (``.difficulty``, ``.pairs``, ``.segment(pair, area)``; a figure in a notebook).
    """
    analysis = Analysis(model, image, layer, top_classes)
    if len(analysis) != 1:
        raise ImageError(f"insecurities() explains one image, got {len(analysis)}; use "
                         "deliberative.analyse(model, images) for a batch")
    return analysis.result(0, difficulty, attribution, normalise, per_cell, predictor,
                           hp_score, ig_steps, chunk_size, progress)
