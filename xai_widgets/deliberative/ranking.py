"""Ranking a folder by difficulty: :func:`hardest` keeps the ``k`` hardest images of a folder
(or a list), from batched forward passes only (no autograd), in this process or on the workers
of a Dask client (:mod:`xai_widgets.distributed`: the same ranking).

Wang, Vasconcelos. "Deliberative Explanations: visualizing network insecurities." NeurIPS 2019.
"""

from __future__ import annotations

import functools
import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import distributed
from ..errors import ImageError, XaiError
from ..images import to_pil
from ..kernels._iterative import inference
from ..models import ModelBundle
from ..scope import eval_mode, model_lock
from ..trace import Trace
from .core import Progress, _positive_int
from .scores import DifficultySpec, resolve_difficulty


@dataclass(frozen=True)
class Hard:
    """One ranked image: ``name`` (path relative to the folder, or the item's name),
    ``score``, its position ``index`` in the input, the ``source`` (path or item) and the top
    classes ``(index, name, probability)``."""

    name: str
    score: float
    index: int
    source: Any
    top: list[tuple[int, str, float]]


@dataclass
class Ranking:
    """The ``k`` hardest images, hardest first; ``failed`` lists ``(name, error)`` of the
    images that could not be read; ``total`` how many were scored."""

    difficulty: str
    items: list[Hard]
    total: int
    failed: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Any:
        return iter(self.items)

    def __getitem__(self, index: int) -> Hard:
        return self.items[index]

    def table(self) -> str:
        lines = [f"{len(self.items)} hardest of {self.total} images by {self.difficulty} "
                 f"({len(self.failed)} unreadable)"]
        lines += [f"{i + 1:4d}. {h.score:.4f}  {h.name}  ({h.top[0][1]} {h.top[0][2]:.0%})"
                  for i, h in enumerate(self.items)]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.table()


def _items(images: Any) -> tuple[list[tuple[str, Any]], Path | None]:
    """``(name, source)`` of a folder's image files (sorted) or of a list of images."""
    if isinstance(images, (str, Path)):
        from ..metrics.folder import list_images

        folder = Path(images)
        files, _ignored = list_images(folder)
        return [(f.relative_to(folder).as_posix(), f) for f in files], folder
    if isinstance(images, dict):
        return [(str(k), v) for k, v in images.items()], None
    if isinstance(images, (list, tuple)):
        return [(_name(item, i), item) for i, item in enumerate(images)], None
    raise ImageError(f"hardest() ranks a folder (a path) or a list of images, got "
                     f"{type(images).__name__}")


def _name(item: Any, index: int) -> str:
    if isinstance(item, (str, Path)):
        return str(item)
    return f"image {index}"


def hardest(model: ModelBundle | nn.Module, images: Any, k: int = 100,
            difficulty: Any = "entropy", *, predictor: nn.Module | None = None,
            hp_score: str | None = None, layer: str | None = None, batch_size: int = 16,
            progress: Progress | None = None, client: Any = None) -> Ranking:
    """Rank a folder (or a list, or a dict name -> image) by difficulty and keep the ``k``
    hardest (largest score). Only forward passes, batched by ``batch_size``, without autograd;
    unreadable files are listed in ``Ranking.failed``, never silently dropped. ``client``: a
    Dask ``distributed.Client`` that scores the batches on its workers (one batch a task; the
    same ranking as without it)."""
    bundle = ModelBundle.wrap(model)
    _positive_int(k, "k", 1)
    _positive_int(batch_size, "batch_size", 1)
    resolved = bundle.layers.resolve(layer, bundle.model) if (
        layer is not None or not isinstance(difficulty, str) or difficulty == "hp") else ""
    spec = resolve_difficulty(difficulty, predictor, resolved or "", hp_score)
    if spec.name == "hp" and spec.layer:
        spec = DifficultySpec(spec.name, spec.predictor,
                              bundle.layers.resolve(spec.layer, bundle.model), spec.output)
    items, _ = _items(images)
    if not items:
        raise ImageError("no images to rank")
    kept: list[tuple[float, int, Hard]] = []
    failed: list[tuple[str, str]] = []
    scorer = _Scorer(bundle, spec)
    numbered = [(number, source) for number, (_, source) in enumerate(items)]
    outcomes = distributed.run(numbered, functools.partial(distributed.placed, scorer,
                                                           *scorer.modules()),
                               _Scorer.batch, client=client, task_size=batch_size,
                               done=distributed.fractions(len(items), progress))
    for number, outcome in enumerate(outcomes):
        name, source = items[number]
        if isinstance(outcome, str):
            failed.append((name, outcome))
            continue
        score, top = outcome
        entry = (score, -number, Hard(name, score, number, source, top))
        if len(kept) < k:
            heapq.heappush(kept, entry)
        elif entry[:2] > kept[0][:2]:
            heapq.heapreplace(kept, entry)
    scored = len(items) - len(failed)
    ranked = [h for _, _, h in sorted(kept, key=lambda e: (-e[0], -e[1]))]
    return Ranking(spec.label, ranked, scored, failed)


Top = list[tuple[int, str, float]]


@dataclass
class _Scorer:
    """Scores batches of images: the difficulty and the top classes of each, or the error
    that made it unreadable."""

    bundle: ModelBundle
    spec: DifficultySpec

    def modules(self) -> list[nn.Module]:
        return [self.bundle.model] + ([self.spec.predictor] if self.spec.predictor else [])

    def batch(self, chunk: list[tuple[int, Any]]) -> list[tuple[float, Top] | str]:
        """``(score, top classes)`` of each ``(number, source)`` of ``chunk``, or its error."""
        errors: list[str | None] = []
        inputs: list[torch.Tensor] = []
        for number, source in chunk:
            try:
                inputs.append(_model_input(self.bundle, source, number))
                errors.append(None)
            except XaiError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        if not inputs:
            return list(errors)  # type: ignore[arg-type]
        scores, logits = _scores(self.bundle, torch.cat(inputs), self.spec)
        probabilities = logits.double().softmax(dim=1)
        rows = iter(range(len(inputs)))
        return [error if error is not None else self._scored(next(rows), scores, probabilities)
                for error in errors]

    def _scored(self, row: int, scores: torch.Tensor, probabilities: torch.Tensor
                ) -> tuple[float, Top]:
        top = probabilities[row].topk(min(3, probabilities.shape[1]))
        return float(scores[row]), [(int(i), self.bundle.class_name(int(i)), float(p))
                                    for p, i in zip(top.values, top.indices, strict=True)]


def _model_input(bundle: ModelBundle, source: Any, number: int) -> torch.Tensor:
    """One image as a model input ``(1, 3, H, W)``: a float tensor is taken as it is (checked),
    anything else goes through the bundle's preprocessing (no display is kept)."""
    if isinstance(source, torch.Tensor) and source.is_floating_point():
        x = source.detach()
        x = x[None] if x.ndim == 3 else x
        if x.ndim != 4 or x.shape[:2] != (1, 3) or not bool(torch.isfinite(x).all()):
            raise ImageError(f"input {number} is a float tensor of shape {tuple(source.shape)}; "
                             "a normalised model input is (3, H, W) or (1, 3, H, W), finite")
        return x.float()
    picture = to_pil(source, number)[0] if isinstance(source, (str, Path)) else source
    return bundle.prepare(picture, display_scale=1).inputs


def _scores(bundle: ModelBundle, inputs: torch.Tensor,
            spec: DifficultySpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Difficulty scores and logits of a batch, forward passes only."""
    if spec.name != "hp":
        with model_lock(bundle.model), inference(bundle):
            logits = bundle.model(inputs.to(bundle.device))
        return spec.score_from_logits(logits.double()), logits
    assert spec.predictor is not None and spec.layer is not None
    copy = [spec.layer] if bundle.layers[spec.layer].mutated_later else []
    trace = Trace(bundle, inputs, record=[spec.layer], copy=copy, with_graph=False)
    with model_lock(spec.predictor), eval_mode(spec.predictor), torch.no_grad():
        z = spec.predict(trace.activation(spec.layer)).double()
    return spec.score_from_z(z), trace.logits

