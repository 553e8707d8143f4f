"""The trained x-feature network attached to its CNN: faithfulness, contributions, maps.

An :class:`XNN` is the combined model ``CNN[input → Z] → SRAE encoder → linear head``: for an
image, ``ŷ = Σ_k W_k e_k(Z) + b`` should equal the CNN's own score ``y`` for the class
(faithfulness, measured on held-out images), and ``C_k = W_k e_k`` is what x-feature ``k``
contributes to it. :meth:`XNN.explain` shows each x-feature on the image as a contrastive
excitation-backprop map (:mod:`.maps`), ordered by contribution with the signed contribution
``C_k / max_l |C_l|`` in the title, as in the paper's figures. The user's model is never
changed: the combined model reads it through forward hooks scoped to each call.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..figures import ShowsFigure
from ..models import ModelBundle
from ..render import RenderSettings, render_maps
from ..scope import eval_mode, model_lock
from .errors import XFeatureFileError
from .features import Embedding, FeatureSet, StopForward, capture, model_fingerprint
from .maps import INPUT, xfeature_maps
from .srae import (
    SRAE,
    Round,
    SRAEConfig,
    Training,
    contributions,
    correlation,
    train_srae,
    with_overrides,
)

FORMAT = "xai_widgets.xnn"
VERSION = 1
#: the default look of x-feature maps: the positive part (evidence for), a perceptual colormap
MAP_DISPLAY = RenderSettings(polarity="positive", cmap="inferno", opacity=0.6)


def train(data: FeatureSet, n_features: int | None = None, seed: int = 0,
          progress: Callable[..., None] | None = None,
          checkpoint: str | Path | None = None, config: SRAEConfig | None = None,
          **settings: Any) -> XNN:
    """Train an x-feature network on ``data`` (see :mod:`.srae` for every setting).

    ``n_features`` (default 5) and ``settings`` override the fields of ``config`` (default
    :class:`SRAEConfig`, the original driver's settings); the held-out split is drawn by
    ``seed`` too (``config.test_fraction`` of each label).

    ``progress(fraction, **series)`` is called after every epoch with the loss series so far
    (``loss``, ``prediction``, ``reconstruction``, ``pull_away``, ``pretrain``); it may raise
    :class:`~xai_widgets.jobs.Cancelled`. With ``checkpoint`` a path, the run resumes from the
    last finished epoch saved there.
    """
    if n_features is not None:
        settings["n_features"] = n_features
    config = with_overrides(config or SRAEConfig(), **settings)
    train_index, test_index = data.split(config.test_fraction, seed)
    if len(test_index) == 0 or len(train_index) < 2:
        from .errors import XFeatureDataError

        raise XFeatureDataError(
            f"{len(data)} images are too few to train and check an XNN (train "
            f"{len(train_index)}, held out {len(test_index)}); give at least a few images of "
            "the class and of other classes")
    result = train_srae(data.z, data.y, train_index, test_index, config, seed, progress,
                        checkpoint)
    return XNN.from_training(result, data)


@dataclass
class Faithfulness(ShowsFigure):
    """How well ``ŷ`` reproduces the CNN's score ``y`` on held-out images."""

    r2: float
    mean_abs_error: float
    y: np.ndarray
    y_hat: np.ndarray

    def __repr__(self) -> str:
        return (f"Faithfulness(R² = {self.r2:.3f}, mean |ŷ − y| = {self.mean_abs_error:.3f} "
                f"on {len(self.y)} held-out images)")

    def figure(self) -> Any:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(3.6, 3.4), layout="constrained")
        axes = figure.add_subplot()
        axes.scatter(self.y, self.y_hat, s=12, color="#3b528b")
        low = float(min(self.y.min(), self.y_hat.min()))
        high = float(max(self.y.max(), self.y_hat.max()))
        axes.plot([low, high], [low, high], color="0.5", lw=1)
        axes.set_xlabel("CNN score y")
        axes.set_ylabel("XNN prediction ŷ")
        axes.set_title(f"held out: R² = {self.r2:.3f}", fontsize=10)
        return figure


def r_squared(y: torch.Tensor, y_hat: torch.Tensor) -> float:
    residual = float(((y - y_hat) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - residual / total if total > 0 else float("nan")


@dataclass
class Contributions(ShowsFigure):
    """Per x-feature of each image: activation ``e_k``, weight ``W_k``, contribution
    ``C_k = W_k e_k``; ``y_hat = Σ C + bias`` and the CNN's ``score``."""

    activation: torch.Tensor
    weight: torch.Tensor
    contribution: torch.Tensor
    bias: float
    y_hat: torch.Tensor
    score: torch.Tensor
    names: list[str]
    class_name: str

    def __repr__(self) -> str:
        lines = []
        for i, name in enumerate(self.names):
            parts = ", ".join(f"x{k + 1}: {float(c):+.3f}"
                              for k, c in enumerate(self.contribution[i]))
            lines.append(f"{name}: ŷ = {float(self.y_hat[i]):.3f} (CNN {float(self.score[i]):.3f})"
                         f" = {parts} + bias {self.bias:+.3f}")
        return "\n".join(lines)

    def figure(self) -> Any:
        from matplotlib.figure import Figure

        rows = len(self.names)
        figure = Figure(figsize=(4.2, 2.2 * rows), layout="constrained")
        for i in range(rows):
            axes = figure.add_subplot(rows, 1, i + 1)
            _contribution_bars(axes, self.contribution[i])
            axes.set_title(f"{self.names[i]}: ŷ = {float(self.y_hat[i]):.2f}, CNN "
                           f"{self.class_name!r} = {float(self.score[i]):.2f}", fontsize=9)
        return figure


def _contribution_bars(axes: Any, contribution: torch.Tensor) -> None:
    values = contribution.numpy()
    colours = ["#b2182b" if v > 0 else "#2166ac" if v < 0 else "#9ecae1" for v in values]
    axes.bar([f"x{k + 1}" for k in range(len(values))], values, color=colours)
    axes.axhline(0, color="0.4", lw=0.8)
    axes.set_ylabel("contribution")


@dataclass
class XFeatureMaps(ShowsFigure):
    """c-EB maps ``(N, n_x, h, w)`` (raw, signed) of every x-feature of ``N`` images at
    ``layer``, the contributions, the display photos, and each image's order of x-features
    (largest contribution first)."""

    maps: torch.Tensor
    contributions: Contributions
    display: np.ndarray
    layer: str
    settings: RenderSettings = MAP_DISPLAY

    @property
    def order(self) -> torch.Tensor:
        return torch.argsort(self.contributions.contribution, dim=1, descending=True,
                             stable=True)

    def titles(self, image: int = 0) -> list[str]:
        """``"x-feature k: ±v"`` with ``v = C_k / max_l |C_l|``, in display order."""
        c = self.contributions.contribution[image]
        top = float(c.abs().max()) or 1.0
        return [f"x-feature {int(k) + 1}: {round(float(c[k]) / top, 2) + 0.0:+.2f}"
                for k in self.order[image]]

    def __repr__(self) -> str:
        images, count, height, width = self.maps.shape
        lines = [f"XFeatureMaps({images} image(s) × {count} x-features, {height}×{width} at "
                 f"{self.layer!r}, class {self.contributions.class_name!r})"]
        lines += [f"  {name}: " + ", ".join(self.titles(i))
                  for i, name in enumerate(self.contributions.names)]
        return "\n".join(lines)

    def frames(self, image: int = 0) -> list[Any]:
        """One rendered :class:`~xai_widgets.render.Frame` per x-feature, in display order."""
        order = self.order[image]
        raw = self.maps[image][order]
        display = np.repeat(self.display[image:image + 1], len(order), axis=0)
        return render_maps(raw, display, self.settings, self.titles(image))

    def figure(self) -> Any:
        from matplotlib.figure import Figure

        count = self.maps.shape[1]
        rows = self.maps.shape[0]
        figure = Figure(figsize=(2.3 * (count + 2), 2.5 * rows), layout="constrained")
        for i in range(rows):
            axes = figure.add_subplot(rows, count + 2, i * (count + 2) + 1)
            axes.imshow(self.display[i])
            axes.set_title(self.contributions.names[i], fontsize=9)
            axes.axis("off")
            c = self.contributions.contribution[i]
            for j, (frame, title) in enumerate(zip(self.frames(i), self.titles(i), strict=True)):
                axes = figure.add_subplot(rows, count + 2, i * (count + 2) + 2 + j)
                axes.imshow(frame.composite())
                k = int(self.order[i][j])
                axes.set_title(title, fontsize=9, color=_title_colour(float(c[k]),
                                                                      float(c.abs().max())))
                axes.axis("off")
            axes = figure.add_subplot(rows, count + 2, (i + 1) * (count + 2))
            _contribution_bars(axes, c)
            axes.set_title(f"ŷ {float(self.contributions.y_hat[i]):.2f} · CNN "
                           f"{float(self.contributions.score[i]):.2f}", fontsize=9)
        figure.suptitle(f"x-features of {self.contributions.class_name!r} "
                        f"(c-EB at {self.layer})", fontsize=10)
        return figure


def _title_colour(value: float, top: float) -> tuple[float, float, float]:
    """Red for evidence for the class, blue against, pale blue for none (as the authors)."""
    if top <= 0 or value == 0:
        return (0.55, 0.7, 0.85)
    strength = min(1.0, abs(value) / top)
    return (0.5 + 0.5 * strength, 0.1, 0.1) if value > 0 else (0.1, 0.2, 0.5 + 0.5 * strength)


@dataclass
class TrainSetDiagnostics(ShowsFigure):
    """The original diagnostics on the training set: mean contribution of each x-feature and
    the correlation matrix of the contributions."""

    mean: torch.Tensor
    correlation: torch.Tensor
    rounds: list[Round]

    def __repr__(self) -> str:
        means = ", ".join(f"x{k + 1}: {float(v):+.3f}" for k, v in enumerate(self.mean))
        return (f"TrainSetDiagnostics(mean contributions {means}; "
                f"{len(self.rounds)} round(s), accepted: {self.rounds[-1].accepted})")

    def figure(self) -> Any:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(7.2, 3.0), layout="constrained")
        left, right = figure.subplots(1, 2)
        _contribution_bars(left, self.mean)
        left.set_title("mean contribution (train set)", fontsize=9)
        n = len(self.mean)
        image = right.imshow(self.correlation.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        labels = [f"x{k + 1}" for k in range(n)]
        right.set_xticks(range(n), labels)
        right.set_yticks(range(n), labels)
        right.set_title("correlation of contributions", fontsize=9)
        figure.colorbar(image, ax=right, shrink=0.8)
        return figure


class CombinedModel(nn.Module):
    """``CNN[input → Z] → encoder → head``: an ``nn.Module`` returning ``ŷ`` ``(N, 1)``.

    The CNN stops at ``Z`` (a scoped forward hook); the user's model is held, not changed.
    Any method of the toolkit can explain it, e.g. ``xw.explain(xnn.combined(), image,
    method="grad_cam", target=0)``.
    """

    def __init__(self, cnn: nn.Module, embedding: Embedding, srae: SRAE) -> None:
        super().__init__()
        self.cnn, self.srae = cnn, srae
        self.embedding = embedding

    def features(self, x: torch.Tensor) -> torch.Tensor:
        sink: list[torch.Tensor] = []
        with capture(self.cnn, self.embedding, sink, stop=True), \
                contextlib.suppress(StopForward):
            self.cnn(x)
        return self.srae.encode(sink[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.srae.classifier(self.features(x))


class XNN:
    """A trained x-feature network for one class of one model (see the module docstring)."""

    def __init__(self, srae: SRAE, config: SRAEConfig, meta: dict[str, Any],
                 bundle: ModelBundle | None = None) -> None:
        self.srae = srae.eval()
        if bundle is not None:  # maps and contributions run where the model runs
            self.srae.to(bundle.device)
        self.config = config
        self.meta = meta
        self.bundle = bundle
        self.embedding = Embedding(meta["embedding"]["module"], meta["embedding"]["side"])

    @classmethod
    def from_training(cls, result: Training, data: FeatureSet) -> XNN:
        model = result.model
        train_c = contributions(model, data.z[result.train_index])
        with torch.inference_mode():
            _, _, y_hat = model(data.z[result.test_index])
        y = data.y[result.test_index]
        meta = {
            "format": FORMAT, "version": VERSION, "cls": data.cls, "class_name": data.class_name,
            "layer": data.layer,
            "embedding": {"module": data.layer.removesuffix(":input"),
                          "side": "input" if data.layer.endswith(":input") else "output"},
            "dim": data.dim, "model_fingerprint": data.model_fingerprint, "seed": result.seed,
            "config": result.config.to_json(), "n_train": len(result.train_index),
            "n_test": len(result.test_index),
            "rounds": [r.__dict__ for r in result.rounds], "history": result.history,
            "mean_contributions": train_c.mean(dim=0).tolist(),
            "correlation": correlation(train_c).tolist(),
            "test_y": y.tolist(), "test_y_hat": y_hat.float().tolist(),
        }
        return cls(model, result.config, meta, data.bundle)

    # ------------------------------------------------------------------ summary

    @property
    def n_features(self) -> int:
        return self.srae.n_features

    @property
    def class_name(self) -> str:
        return str(self.meta["class_name"])

    @property
    def rounds(self) -> list[Round]:
        return [Round(**r) for r in self.meta["rounds"]]

    @property
    def history(self) -> dict[str, list[float]]:
        return dict(self.meta["history"])

    def __repr__(self) -> str:
        f = self.faithfulness()
        return (f"XNN({self.class_name!r}, {self.n_features} x-features on "
                f"{self.meta['layer']!r}, held-out R² {f.r2:.3f}, "
                f"{len(self.meta['rounds'])} round(s), accepted: {self.rounds[-1].accepted})")

    def faithfulness(self) -> Faithfulness:
        """R² and mean |ŷ − y| of the XNN against the CNN's score on the held-out images."""
        y = torch.tensor(self.meta["test_y"])
        y_hat = torch.tensor(self.meta["test_y_hat"])
        return Faithfulness(r_squared(y, y_hat), float((y - y_hat).abs().mean()),
                            y.numpy(), y_hat.numpy())

    def diagnostics(self) -> TrainSetDiagnostics:
        """Mean contributions and their correlation matrix on the training set."""
        return TrainSetDiagnostics(torch.tensor(self.meta["mean_contributions"]),
                                   torch.tensor(self.meta["correlation"]), self.rounds)

    # ------------------------------------------------------------------ images

    def _bundle(self) -> ModelBundle:
        if self.bundle is None:
            raise XFeatureFileError("this XNN is not attached to a model; load it with "
                                    "xfeatures.load(path, bundle)")
        return self.bundle

    def combined(self) -> CombinedModel:
        """The combined model as an ``nn.Module`` (CNN up to Z → encoder → head)."""
        return CombinedModel(self._bundle().model, self.embedding, self.srae)

    def contributions(self, images: Any) -> Contributions:
        """Activation, weight and contribution of every x-feature for each image, with ŷ and
        the CNN's score."""
        bundle = self._bundle()
        batch = bundle.prepare(images)
        return self._contributions(bundle, batch.inputs, batch.names)

    def _contributions(self, bundle: ModelBundle, inputs: torch.Tensor, names: list[str]
                       ) -> Contributions:
        model = bundle.model
        sink: list[torch.Tensor] = []
        parameter = next(model.parameters(), None)
        x = inputs.to(device=bundle.device,
                      dtype=parameter.dtype if parameter is not None else None)
        with model_lock(model), torch.inference_mode(), eval_mode(model), \
                capture(model, self.embedding, sink):
            logits = model(x)
            e = self.srae.encode(sink[-1].float()).cpu()
        weight = self.srae.weight.cpu()
        c = e * weight
        bias = float(self.srae.classifier.bias[0].detach())
        return Contributions(e, weight, c, bias, c.sum(dim=1) + bias,
                             logits[:, int(self.meta["cls"])].float().cpu(), names,
                             self.class_name)

    def explain(self, images: Any, layer: str | None = None,
                settings: RenderSettings | None = None) -> XFeatureMaps:
        """One c-EB map per x-feature at ``layer`` (default: the model's default layer;
        ``"input"``: the image) for each image, ordered by contribution; a figure."""
        bundle = self._bundle()
        batch = bundle.prepare(images)
        maps, _ = xfeature_maps(bundle, self.srae, self.embedding, batch.inputs, layer)
        found = INPUT if layer == INPUT else bundle.layers.resolve(layer, bundle.model)
        return XFeatureMaps(maps, self._contributions(bundle, batch.inputs, batch.names),
                            batch.display, found, settings or MAP_DISPLAY)

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """One file: the SRAE's state dict and the JSON metadata (loads with
        ``weights_only=True``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": FORMAT, "meta": json.dumps(self.meta),
                    "state_dict": self.srae.state_dict()}, path)
        return path


def load(path: str | Path, bundle: ModelBundle | nn.Module | None = None,
         check_model: bool = True) -> XNN:
    """An XNN saved by :meth:`XNN.save`, attached to ``bundle`` (the model it explains).

    ``check_model``: refuse a model whose weights differ from those the XNN was trained on.
    """
    path = Path(path)
    try:
        saved = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu",
                           weights_only=True)
    except FileNotFoundError as exc:
        raise XFeatureFileError(f"no file {str(path)!r}; save one with xnn.save(path)") from exc
    except Exception as exc:
        raise XFeatureFileError(f"cannot read {str(path)!r} as an XNN ({exc}); it should be a "
                                "file written by XNN.save") from exc
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise XFeatureFileError(f"{str(path)!r} is not an XNN file (written by XNN.save)")
    meta = json.loads(saved["meta"])
    config = SRAEConfig.from_json(meta["config"])
    srae = SRAE(int(meta["dim"]), config.n_features, config.hidden, config.dropout)
    srae.load_state_dict(saved["state_dict"])
    wrapped = None if bundle is None else ModelBundle.wrap(bundle)
    if wrapped is not None and check_model and \
            model_fingerprint(wrapped.model) != meta["model_fingerprint"]:
        raise XFeatureFileError(
            f"{str(path)!r} was trained on the features of another model (or other weights) "
            f"than {wrapped.name!r}; load it with the model it explains, or pass "
            "check_model=False to attach it anyway")
    return XNN(srae, config, meta, wrapped)
