"""The hardness predictor (HP): a small head on the features of one layer of the classifier that
predicts how hard an image is for it.

Architecture (the head of the original ``AHP_Net``, on our model's pooled features instead of
a second VGG trunk): ``GAP → BN → ReLU → Dropout → Linear(K→h₁) → BN → ReLU → Dropout →
Linear(h₁→h₂) → BN → ReLU → Dropout → Linear(h₂→1)``; ``forward`` returns the **pre-sigmoid**
``z`` ``(N,)``. Which output is the difficulty score is explicit (``output``): ``"sigmoid"``
``s = σ(z)`` (the trained quantity) or ``"logit"`` ``s = z``. The original scripts mixed the
two, and with ``z`` the second-order term of the gradient–Hessian map is identically 0.

Training (the "Towards realistic predictors" hardness loss the original used): with ``p_i`` the
classifier's softmax probability of the true label of image ``i`` and ``s_i = σ(z_i)``,

    L = mean_i 1 − [(1 − p_i) s_i + (1 − s_i) p_i]

minimised by ``s_i → 1`` where ``p_i < ½`` and ``s_i → 0`` where ``p_i > ½``. The classifier
is frozen (never changed): its features and ``p_i`` are computed once, without autograd, and
only the head learns (Adam). The original trained a second trunk jointly with a
hardness-weighted classifier loss; that needs the classifier's weights to change, which this
toolkit never does.

Wang, Vasconcelos. "Deliberative Explanations: visualizing network insecurities." NeurIPS 2019.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ImageError, ParameterError, TargetError, XaiError
from ..images import to_pil
from ..models import ModelBundle
from ..targets import resolve_targets
from ..trace import Trace
from .scores import HP_SCORES


class HardnessPredictor(nn.Module):
    """``z = head(mean_hw(A))`` for the activations ``A`` ``(N, K, h, w)`` of ``layer``."""

    def __init__(self, channels: int, layer: str | None = None,
                 hidden: tuple[int, int] = (256, 64), dropout: float = 0.5,
                 output: str = "sigmoid") -> None:
        super().__init__()
        if output not in HP_SCORES:
            raise ParameterError(f"output must be 'sigmoid' (s = σ(z)) or 'logit' (s = z), "
                                 f"got {output!r}")
        first, second = hidden
        self.layer = layer
        self.output = output
        #: the training loss per epoch (set by :func:`train_hardness_predictor`)
        self.history = torch.empty(0)
        self.head = nn.Sequential(
            nn.BatchNorm1d(channels), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(channels, first), nn.BatchNorm1d(first), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(first, second), nn.BatchNorm1d(second), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(second, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3)) if features.ndim == 4 else features
        return self.head(pooled).squeeze(1)

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}, output={self.output!r}"


def hardness_loss(z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``mean 1 − [(1 − p) σ(z) + (1 − σ(z)) p]`` (per image ``p``: the true class's
    probability)."""
    s = torch.sigmoid(z)
    return (1 - ((1 - p) * s + (1 - s) * p)).mean()


def read_labels(path: str | Path) -> dict[str, Any]:
    """``image,label`` rows (a header row is skipped); labels are class indices or names."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"no label file at {str(path)!r}; give a CSV of image,label rows")
    labels: dict[str, Any] = {}
    with path.open(newline="", encoding="utf-8") as stream:
        for number, row in enumerate(csv.reader(stream), start=1):
            if not row:
                continue
            if len(row) != 2:
                raise ParameterError(f"row {number} of {str(path)!r} has {len(row)} columns; "
                                     "a label file has two: image,label")
            image, label = (c.strip() for c in row)
            if number == 1 and image.lower() in ("image", "file", "filename", "path", "name"):
                continue
            labels[image] = int(label) if label.lstrip("-").isdigit() else label
    return labels


def _labelled(images: Any, labels: Any) -> list[tuple[str, Any, Any]]:
    """``(name, image source, label)`` for a folder + labels, or parallel lists."""
    if isinstance(images, (str, Path)):
        from ..metrics.folder import list_images

        folder = Path(images)
        files, _ = list_images(folder)
        table = read_labels(labels) if isinstance(labels, (str, Path)) else \
            dict(labels or {})
        if not table and (folder / "labels.csv").is_file():
            table = read_labels(folder / "labels.csv")
        out = []
        for file in files:
            relative = file.relative_to(folder).as_posix()
            label = table.get(relative, table.get(file.name))
            if label is not None:
                out.append((relative, file, label))
        if not out:
            raise TargetError(f"no image of {str(folder)!r} has a label; give labels= (a CSV "
                              "of image,label rows, or a dict) or a labels.csv in the folder")
        return out
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        images = list(images)
    if not isinstance(images, (list, tuple)) or labels is None \
            or isinstance(labels, (str, Path, Mapping)) or len(labels) != len(images):
        raise TargetError("give a folder with labels (a CSV or dict), or a list of images and a "
                          "list of labels of the same length")
    return [(f"image {i}", image, label) for i, (image, label) in
            enumerate(zip(images, labels, strict=True))]


def features_and_probabilities(bundle: ModelBundle, items: Sequence[tuple[str, Any, Any]],
                               layer: str, batch_size: int = 32
                               ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Pooled features ``(N, K)`` of ``layer`` and the true class's probability ``(N,)``,
    forward passes only; unreadable images are skipped and named in the third value."""
    copy = [layer] if bundle.layers[layer].mutated_later else []
    pooled, probabilities, failed = [], [], []
    for first in range(0, len(items), batch_size):
        inputs, labels = [], []
        for name, source, label in items[first:first + batch_size]:
            try:
                picture = to_pil(source)[0] if isinstance(source, (str, Path)) else source
                inputs.append(bundle.prepare(picture, display_scale=1).inputs)
                labels.append(label)
            except XaiError as exc:
                failed.append(f"{name}: {exc}")
        if not inputs:
            continue
        trace = Trace(bundle, torch.cat(inputs), record=[layer], copy=copy, with_graph=False)
        logits = trace.logits.detach()
        targets = resolve_targets(labels, logits, bundle.class_names)
        p = logits.double().softmax(dim=1)[torch.arange(len(targets)), torch.tensor(targets)]
        pooled.append(trace.activation(layer).mean(dim=(2, 3)).float().cpu())
        probabilities.append(p.float().cpu())
    if not pooled:
        raise ImageError("none of the images could be read: " + "; ".join(failed[:3]))
    return torch.cat(pooled), torch.cat(probabilities), failed


def train_hardness_predictor(
    model: ModelBundle | nn.Module, images: Any, labels: Any = None, *,
    layer: str | None = None, epochs: int = 30, batch_size: int = 64, lr: float = 1e-3,
    weight_decay: float = 1e-4, hidden: tuple[int, int] = (256, 64), dropout: float = 0.5,
    output: str = "sigmoid", seed: int = 0,
    progress: Callable[..., None] | None = None,
) -> HardnessPredictor:
    """Train a :class:`HardnessPredictor` on a labelled folder (``labels``: a CSV of
    ``image,label`` rows or a dict; default ``labels.csv`` in the folder) or on a list of
    images with a list of labels.

    ``progress(fraction, loss=losses_so_far)`` is called after every epoch; it may raise
    :class:`~xai_widgets.kernels.spec.Cancelled`, which stops the training and propagates
    (nothing is returned, nothing was changed). The predictor comes back in eval mode with its
    loss per epoch in ``predictor.history``.
    """
    bundle = ModelBundle.wrap(model)
    resolved = bundle.layers.resolve(layer, bundle.model)
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ParameterError(f"lr must be a positive number, got {lr!r}")
    items = _labelled(images, labels)
    features, p, _failed = features_and_probabilities(bundle, items, resolved)
    if len(features) < 2:
        raise ImageError("training needs at least 2 readable labelled images")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        predictor = HardnessPredictor(features.shape[1], resolved, hidden, dropout, output)
    optimiser = torch.optim.Adam(predictor.parameters(), lr=lr, weight_decay=weight_decay)
    history = torch.full((epochs,), float("nan"))
    predictor.train()
    with torch.enable_grad():
        for epoch in range(epochs):
            order = torch.randperm(len(features), generator=generator)
            total, count = 0.0, 0
            for first in range(0, len(order), batch_size):
                index = order[first:first + batch_size]
                if len(index) < 2:  # BatchNorm needs two samples in training mode
                    continue
                loss = hardness_loss(predictor(features[index]), p[index])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(index)
                count += len(index)
            history[epoch] = total / max(count, 1)
            if progress is not None:
                progress((epoch + 1) / epochs, loss=history[:epoch + 1].clone())
    predictor.eval().to(bundle.device)
    predictor.history = history
    for parameter in predictor.parameters():
        parameter.grad = None
    return predictor


def save_predictor(predictor: HardnessPredictor, path: str | Path) -> Path:
    """Save a trained predictor: its weights and the settings to rebuild it (one file)."""
    path = Path(path)
    first = predictor.head[3]
    second = predictor.head[7]
    assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)
    dropout = predictor.head[2]
    config = {"channels": first.in_features, "layer": predictor.layer,
              "hidden": [first.out_features, second.out_features],
              "dropout": float(dropout.p) if isinstance(dropout, nn.Dropout) else 0.0,
              "output": predictor.output}
    torch.save({"format": 1, "config": config, "state": predictor.state_dict(),
                "history": predictor.history}, path)
    return path


def load_predictor(path: str | Path) -> HardnessPredictor:
    """A predictor saved by :func:`save_predictor` (read with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"no hardness predictor at {str(path)!r}; train one with "
                             "deliberative.train_hardness_predictor and save_predictor")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        config = saved["config"]
        predictor = HardnessPredictor(int(config["channels"]), config["layer"],
                                      tuple(config["hidden"]),
                                      float(config["dropout"]), str(config["output"]))
        predictor.load_state_dict(saved["state"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise ParameterError(f"{str(path)!r} is not a saved hardness predictor ({exc})") from exc
    predictor.history = saved.get("history", torch.empty(0))
    return predictor.eval()
