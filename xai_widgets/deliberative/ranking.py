"""Ranking a folder by difficulty: :func:`hardest` keeps the ``k`` hardest images of a folder
(or a list), from batched forward passes only (no autograd).

Wang, Vasconcelos. "Deliberative Explanations: visualizing network insecurities." NeurIPS 2019.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
            progress: Progress | None = None) -> Ranking:
    """Rank a folder (or a list, or a dict name -> image) by difficulty and keep the ``k``
    hardest (largest score). Only forward passes, batched by ``batch_size``, without autograd;
    unreadable files are listed in ``Ranking.failed``, never silently dropped."""
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
    scored = 0
    for first in range(0, len(items), batch_size):
        batch: list[torch.Tensor] = []
        where: list[int] = []
        for number in range(first, min(first + batch_size, len(items))):
            name, source = items[number]
            try:
                batch.append(_model_input(bundle, source, number))
                where.append(number)
            except XaiError as exc:
                failed.append((name, f"{type(exc).__name__}: {exc}"))
        if batch:
            scores, logits = _scores(bundle, torch.cat(batch), spec)
            probabilities = logits.double().softmax(dim=1)
            for row, number in enumerate(where):
                score = float(scores[row])
                top = probabilities[row].topk(min(3, probabilities.shape[1]))
                hard = Hard(items[number][0], score, number, items[number][1],
                            [(int(i), bundle.class_name(int(i)), float(p))
                             for p, i in zip(top.values, top.indices, strict=True)])
                entry = (score, -number, hard)
                if len(kept) < k:
                    heapq.heappush(kept, entry)
                elif entry[:2] > kept[0][:2]:
                    heapq.heapreplace(kept, entry)
            scored += len(where)
        if progress is not None:
            progress(min(first + batch_size, len(items)) / len(items))
    ranked = [h for _, _, h in sorted(kept, key=lambda e: (-e[0], -e[1]))]
    return Ranking(spec.label, ranked, scored, failed)


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

