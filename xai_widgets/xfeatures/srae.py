"""Sparse reconstruction autoencoder (SRAE): the explanation network of an XNN.

Qi, Khorram, Li. "Embedding Deep Networks into Visual Explanations." arXiv:1709.05360 (2017;
Artificial Intelligence, 2021). The network reads the CNN's embedding ``Z`` (``D``-dim) and
explains one class's score ``y`` through a few non-negative *x-features* ``e``:

    encoder   Z -> Linear(D, 800) + ReLU -> dropout(0.02) -> Linear(800, 100) + ReLU
                -> Linear(100, n_x) + ReLU = e(Z)                      (the x-features)
    head      ŷ = W e + b                                             (faithful to y)
    decoder   e -> Linear(n_x, 100) + ReLU -> Linear(100, 800) + ReLU -> Linear(800, D) + ReLU = Ẑ

trained with

    L = α_pred · mean_i (ŷ_i − y_i)²
      + α_rec  · (1/D) Σ_j log(1 + q · (1/B) Σ_i (Ẑ_ij − Z_ij)²)        (log penalty)
      + α_PT   · PT(S),    S_ik = e_k(Z_i) · W_k + 1e-8               (contributions)

where the pull-away term PT is the mean squared cosine between distinct rows of S (rows =
images, ``pull_away="images"``, the default of every surviving driver) or between distinct
columns (rows = x-features, ``"features"``). The log penalty lets the autoencoder reconstruct
only part of the feature space cheaply; the pull-away term decorrelates the contributions.

Schedule (the authors' driver): greedy layer-wise pretraining of the three single-layer
autoencoders (``D→800→D``, ``800→100→800``, ``100→n_x→100``; MSE, Adam lr 1e-3, batch 50),
each on the codes of the previous one; the head pretrained on the frozen codes (MSE to y);
then fine-tuning of everything with the full loss (Adam lr 1e-3, weight decay 1e-4, lr × 0.1
every 40 epochs). An automatic re-tuning loop retrains from scratch (up to 5 rounds) until at
least 2 x-features have a positive mean contribution on the training set and the second
largest mean contribution is at least 0.3 × the largest; each refused round multiplies α_rec
by 1.2 and α_PT by 0.8.

Epochs: the original trained on about 8 500 images (170 minibatches per epoch) for 1
pretraining epoch and 10 fine-tuning epochs. ``None`` (the default) scales the epochs so that
a smaller set sees the same number of optimiser steps (and the lr step the same number of
steps); give numbers to train exactly that many epochs.

Everything random (initialisation, dropout, shuffling) comes from one local
``torch.Generator`` seeded by ``seed``: the global RNG is never used or advanced, and a run is
reproducible. With ``checkpoint=`` a run saves its state after every finished epoch and
resumes from there (``Cancelled`` raised by ``progress`` stops it between two epochs); the
resumed run equals the uninterrupted one.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError
from .errors import XFeatureFileError

PullAway = Literal["images", "features"]
#: minibatches per epoch in the original setting (8 500 training images, batch 50)
REFERENCE_STEPS_PER_EPOCH = 170
#: α_rec, α_PT of the original driver for each pull-away variant
VARIANT_ALPHAS: dict[str, tuple[float, float]] = {"images": (10.0, 10.0), "features": (15.0, 5.0)}
STAGES = ("encoder1", "encoder2", "encoder3", "head", "finetune")

Progress = Callable[..., None]


@dataclass(frozen=True)
class SRAEConfig:
    """Every setting of the SRAE and its training; defaults are those of the original driver
    (``alpha_rec``/``alpha_pt`` ``None``: that driver's values for the chosen pull-away
    variant; epochs ``None``: scaled to the original number of optimiser steps)."""

    n_features: int = 5
    hidden: tuple[int, int] = (800, 100)
    dropout: float = 0.02
    sparse_reconstruction: bool = True
    q: float = 100.0
    alpha_pred: float = 1.0
    alpha_rec: float | None = None
    alpha_pt: float | None = None
    pull_away: PullAway = "images"
    batch_size: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-4
    pretrain_epochs: int | None = None
    head_epochs: int | None = None
    epochs: int | None = None
    lr_step_epochs: int | None = None
    lr_gamma: float = 0.1
    retune_rounds: int = 5
    min_positive: int = 2
    min_ratio: float = 0.3
    rec_factor: float = 1.2
    pt_factor: float = 0.8
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, accepted: str) -> None:
            if not ok:
                raise ParameterError(f"SRAE: {name} must be {accepted}, got "
                                     f"{getattr(self, name)!r}")

        def whole(value: Any, low: int) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= low

        check("n_features", whole(self.n_features, 1), "an integer ≥ 1 (the paper shows 3–5)")
        check("hidden", len(self.hidden) == 2 and all(whole(h, 1) for h in self.hidden),
              "two positive integers (the original: (800, 100))")
        check("dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)")
        check("q", self.q > 0, "positive")
        check("pull_away", self.pull_away in ("images", "features"), "'images' or 'features'")
        check("batch_size", whole(self.batch_size, 2), "an integer ≥ 2")
        check("lr", self.lr > 0, "positive")
        check("weight_decay", self.weight_decay >= 0, "≥ 0")
        for name in ("pretrain_epochs", "head_epochs", "epochs", "lr_step_epochs"):
            value = getattr(self, name)
            check(name, value is None or whole(value, 0 if name != "lr_step_epochs" else 1),
                  "None (scaled to the original) or a non-negative integer")
        check("retune_rounds", whole(self.retune_rounds, 1), "an integer ≥ 1")
        check("min_ratio", 0.0 <= self.min_ratio <= 1.0, "in [0, 1]")
        check("test_fraction", 0.0 < self.test_fraction < 1.0, "strictly between 0 and 1")
        for name in ("alpha_pred", "alpha_rec", "alpha_pt"):
            value = getattr(self, name)
            check(name, value is None or value >= 0, "≥ 0")

    @property
    def alphas(self) -> tuple[float, float, float]:
        """``(α_pred, α_rec, α_PT)`` with the variant's defaults filled in."""
        rec, pt = VARIANT_ALPHAS[self.pull_away]
        return (self.alpha_pred, rec if self.alpha_rec is None else self.alpha_rec,
                pt if self.alpha_pt is None else self.alpha_pt)

    def schedule(self, n_train: int) -> dict[str, int]:
        """Epochs of each stage and of the lr step for ``n_train`` training images."""
        steps = max(1, math.ceil(n_train / self.batch_size))
        scale = REFERENCE_STEPS_PER_EPOCH / steps
        pretrain = self.pretrain_epochs if self.pretrain_epochs is not None \
            else max(1, round(scale))
        return {
            "pretrain": pretrain,
            "head": self.head_epochs if self.head_epochs is not None else pretrain,
            "finetune": self.epochs if self.epochs is not None else max(10, round(10 * scale)),
            "lr_step": self.lr_step_epochs if self.lr_step_epochs is not None
            else max(1, round(40 * scale)),
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SRAEConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "hidden" in values:
            values["hidden"] = tuple(values["hidden"])
        return cls(**values)


# -------------------------------------------------------------------------------- the network


def _linear(inputs: int, outputs: int) -> nn.Linear:
    """An uninitialised linear layer (no draw from the global RNG)."""
    return nn.utils.skip_init(nn.Linear, inputs, outputs)


class SRAE(nn.Module):
    """Encoder (``D → h1 → h2 → n_x``, ReLUs), linear head (``n_x → 1``), decoder back to ``D``.

    ``forward(z)`` returns ``(e, ẑ, ŷ)``; dropout after the first layer is drawn from the
    ``generator`` given to :meth:`encode` in training mode (never from the global RNG).
    """

    def __init__(self, dim: int, n_features: int = 5, hidden: tuple[int, int] = (800, 100),
                 dropout: float = 0.02, n_out: int = 1) -> None:
        super().__init__()
        h1, h2 = hidden
        self.dim, self.n_features, self.hidden, self.p = dim, n_features, tuple(hidden), dropout
        self.encoder1, self.encoder2 = _linear(dim, h1), _linear(h1, h2)
        self.encoder3 = _linear(h2, n_features)
        self.classifier = _linear(n_features, n_out)
        self.decoder3, self.decoder2 = _linear(n_features, h2), _linear(h2, h1)
        self.decoder1 = _linear(h1, dim)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.zero_()

    def initialise(self, generator: torch.Generator) -> SRAE:
        """PyTorch's default initialisation, U(±1/√fan_in), drawn from ``generator``."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    bound = 1.0 / math.sqrt(module.in_features)
                    module.weight.uniform_(-bound, bound, generator=generator)
                    module.bias.uniform_(-bound, bound, generator=generator)
        return self

    def encode(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The x-features ``e(Z)`` ``(N, n_x)``, non-negative."""
        h1 = torch.relu(self.encoder1(z))
        if self.training and self.p > 0:
            keep = torch.rand(h1.shape, generator=generator, device=h1.device) >= self.p
            h1 = h1 * keep / (1.0 - self.p)
        return torch.relu(self.encoder3(torch.relu(self.encoder2(h1))))

    def decode(self, e: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.decoder1(torch.relu(self.decoder2(torch.relu(self.decoder3(e))))))

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = self.encode(z, generator)
        return e, self.decode(e), self.classifier(e).squeeze(-1)

    @property
    def weight(self) -> torch.Tensor:
        """The head's weights ``W`` ``(n_x,)`` (first output)."""
        return self.classifier.weight[0].detach()


# ------------------------------------------------------------------------------------ losses


def reconstruction_loss(z_hat: torch.Tensor, z: torch.Tensor, q: float = 100.0,
                        sparse: bool = True) -> torch.Tensor:
    """``(1/D) Σ_j log(1 + q · mean_i (ẑ_ij − z_ij)²)``, or the plain MSE if not ``sparse``."""
    squared = (z_hat - z) ** 2
    if not sparse:
        return squared.mean()
    return torch.log1p(q * squared.mean(dim=0)).mean()


def contribution_vectors(e: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``S_ik = e_k(Z_i) · W_k + 1e-8`` ``(B, n_x)``."""
    return e * weight + 1e-8


def pull_away(s: torch.Tensor, over: PullAway = "images") -> torch.Tensor:
    """Mean squared cosine similarity between distinct rows of ``s`` (``"images"``: the rows
    are images) or between distinct columns (``"features"``); 0 if there is only one."""
    rows = s if over == "images" else s.t()
    count = rows.shape[0]
    if count < 2:
        return s.sum() * 0.0
    unit = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cosine = unit @ unit.t()
    off = cosine.pow(2).sum() - cosine.diagonal().pow(2).sum()
    return off / (count * (count - 1))


def srae_loss(model: SRAE, z: torch.Tensor, y: torch.Tensor, config: SRAEConfig,
              alphas: tuple[float, float, float], generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """The full loss of one minibatch and its three terms (unweighted)."""
    e, z_hat, y_hat = model(z, generator)
    prediction = F.mse_loss(y_hat, y)
    reconstruction = reconstruction_loss(z_hat, z, config.q, config.sparse_reconstruction)
    pt = pull_away(contribution_vectors(e, model.classifier.weight[0]), config.pull_away)
    a_pred, a_rec, a_pt = alphas
    total = a_pred * prediction + a_rec * reconstruction + a_pt * pt
    return total, {"prediction": prediction.item(), "reconstruction": reconstruction.item(),
                   "pull_away": pt.item()}


# ------------------------------------------------------------------------------- diagnostics


def contributions(model: SRAE, z: torch.Tensor) -> torch.Tensor:
    """``C_ik = e_k(Z_i) · W_k`` ``(N, n_x)`` (eval mode, no dropout)."""
    training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            return model.encode(z) * model.weight
    finally:
        model.train(training)


def correlation(c: torch.Tensor) -> torch.Tensor:
    """``corrcoef`` of the contribution columns; a constant column correlates 0 with the
    others (1 with itself)."""
    values = c.double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.corrcoef(values, rowvar=False) if values.shape[0] > 1 \
            else np.eye(values.shape[1])
    matrix = np.atleast_2d(np.nan_to_num(matrix, nan=0.0))
    np.fill_diagonal(matrix, 1.0)
    return torch.from_numpy(matrix).float()


def accept(mean_contributions: torch.Tensor, min_positive: int = 2,
           min_ratio: float = 0.3) -> bool:
    """The re-tuning loop's acceptance rule: at least ``min_positive`` x-features with a
    positive mean contribution, and the second largest mean ≥ ``min_ratio`` × the largest."""
    means = sorted((float(v) for v in mean_contributions), reverse=True)
    positive = sum(1 for v in means if v > 0)
    if positive < min_positive or positive < 1:
        return False
    if len(means) < 2:
        return True
    return means[1] / means[0] >= min_ratio


# ---------------------------------------------------------------------------------- training


@dataclass
class Round:
    """One training round of the re-tuning loop: its loss weights and verdict."""

    alpha_rec: float
    alpha_pt: float
    mean_contributions: list[float]
    accepted: bool


@dataclass
class Training:
    """A finished training: the network, the rounds, the per-epoch losses of the last round."""

    model: SRAE
    config: SRAEConfig
    rounds: list[Round]
    history: dict[str, list[float]]
    train_index: torch.Tensor
    test_index: torch.Tensor
    seed: int

    @property
    def accepted(self) -> bool:
        return self.rounds[-1].accepted


@dataclass
class _State:
    """What a checkpoint holds: where the run is, and everything needed to continue it."""

    round: int = 0
    stage: int = 0
    epoch: int = 0
    alpha_rec: float = 0.0
    alpha_pt: float = 0.0
    rounds: list[dict[str, Any]] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)


def data_fingerprint(z: torch.Tensor, y: torch.Tensor, train_index: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in (z, y, train_index):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def train_srae(z: torch.Tensor, y: torch.Tensor, train_index: torch.Tensor,
               test_index: torch.Tensor, config: SRAEConfig, seed: int = 0,
               progress: Progress | None = None,
               checkpoint: str | Path | None = None) -> Training:
    """Train an SRAE on ``z[train_index]`` to predict ``y`` (see the module docstring)."""
    z = z.detach().float().cpu()
    y = y.detach().float().cpu()
    z_train, y_train = z[train_index], y[train_index]
    schedule = config.schedule(len(train_index))
    identity = {"config": config.to_json(), "seed": seed,
                "data": data_fingerprint(z, y, train_index)}
    generator = torch.Generator().manual_seed(seed)
    model = SRAE(z.shape[1], config.n_features, config.hidden, config.dropout)
    _, alpha_rec, alpha_pt = config.alphas
    state = _State(alpha_rec=alpha_rec, alpha_pt=alpha_pt)
    optimizer_state: dict[str, Any] | None = None
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        saved = _load_checkpoint(path, identity)
        state = _State(**json.loads(saved["state"]))
        model.load_state_dict(saved["model"])
        generator.set_state(saved["generator"])
        optimizer_state = saved.get("optimizer")
    else:
        model.initialise(generator)

    epochs = [schedule["pretrain"]] * 3 + [schedule["head"], schedule["finetune"]]
    total_epochs = max(1, sum(epochs))
    while True:
        alphas = (config.alpha_pred, state.alpha_rec, state.alpha_pt)
        for stage in range(state.stage, len(STAGES)):
            parameters = _stage_parameters(model, stage)
            decay = config.weight_decay if STAGES[stage] == "finetune" else 0.0
            optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=decay)
            if optimizer_state is not None:
                optimizer.load_state_dict(optimizer_state)
                optimizer_state = None
            inputs = _stage_inputs(model, stage, z_train)
            for epoch in range(state.epoch, epochs[stage]):
                if STAGES[stage] == "finetune":
                    lr = config.lr * config.lr_gamma ** (epoch // schedule["lr_step"])
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                terms = _epoch(model, stage, inputs, z_train, y_train, optimizer, generator,
                               config, alphas)
                for name, value in terms.items():
                    state.history.setdefault(name, []).append(value)
                state.epoch = epoch + 1
                if path is not None:
                    _save_checkpoint(path, identity, state, model, optimizer, generator)
                if progress is not None:
                    done = sum(epochs[:stage]) + epoch + 1
                    progress(done / total_epochs, **_series(state))
            state.stage, state.epoch = stage + 1, 0
        means = contributions(model, z_train).mean(dim=0)
        ok = accept(means, config.min_positive, config.min_ratio) if config.n_features >= 2 \
            else True
        state.rounds.append(asdict(Round(state.alpha_rec, state.alpha_pt,
                                         [float(v) for v in means], ok)))
        if ok or len(state.rounds) >= config.retune_rounds:
            break
        state.round += 1
        state.stage, state.epoch, state.history = 0, 0, {}
        state.alpha_rec *= config.rec_factor
        state.alpha_pt *= config.pt_factor
        model.initialise(generator)
        if path is not None:
            _save_checkpoint(path, identity, state, model, None, generator)
    model.eval()
    return Training(model, config, [Round(**r) for r in state.rounds], state.history,
                    train_index, test_index, seed)


def _series(state: _State) -> dict[str, Any]:
    series: dict[str, Any] = {name: torch.tensor(values) for name, values in state.history.items()}
    series["round"] = torch.tensor([state.round])
    return series


def _stage_parameters(model: SRAE, stage: int) -> list[nn.Parameter]:
    name = STAGES[stage]
    if name == "finetune":
        return list(model.parameters())
    if name == "head":
        return list(model.classifier.parameters())
    level = int(name[-1])
    encoder = getattr(model, f"encoder{level}")
    decoder = getattr(model, f"decoder{level}")
    return [*encoder.parameters(), *decoder.parameters()]


def _stage_inputs(model: SRAE, stage: int, z: torch.Tensor) -> torch.Tensor:
    """The codes a pretraining stage learns from (the frozen layers below, no dropout)."""
    with torch.no_grad():
        codes = z
        for level in range(1, min(stage, 3) + 1):
            codes = torch.relu(getattr(model, f"encoder{level}")(codes))
    return codes


def _epoch(model: SRAE, stage: int, inputs: torch.Tensor, z: torch.Tensor, y: torch.Tensor,
           optimizer: torch.optim.Optimizer, generator: torch.Generator, config: SRAEConfig,
           alphas: tuple[float, float, float]) -> dict[str, float]:
    name = STAGES[stage]
    order = torch.randperm(len(inputs), generator=generator)
    sums: dict[str, float] = {}
    count = 0
    model.train(name == "finetune")
    for start in range(0, len(order), config.batch_size):
        batch = order[start:start + config.batch_size]
        if name == "finetune":
            loss, terms = srae_loss(model, z[batch], y[batch], config, alphas, generator)
            terms = {"loss": loss.item(), **terms}
        elif name == "head":
            loss = F.mse_loss(model.classifier(inputs[batch]).squeeze(-1), y[batch])
            terms = {"pretrain": loss.item()}
        else:
            level = int(name[-1])
            codes = inputs[batch]
            encoded = torch.relu(getattr(model, f"encoder{level}")(codes))
            decoded = torch.relu(getattr(model, f"decoder{level}")(encoded))
            loss = F.mse_loss(decoded, codes)
            terms = {"pretrain": loss.item()}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        weight = len(batch)
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + value * weight
        count += weight
    model.eval()
    return {key: value / count for key, value in sums.items()}


def _save_checkpoint(path: Path, identity: dict[str, Any], state: _State, model: SRAE,
                     optimizer: torch.optim.Optimizer | None, generator: torch.Generator) -> None:
    payload: dict[str, Any] = {
        "identity": json.dumps(identity, sort_keys=True),
        "state": json.dumps(asdict(state)),
        "model": model.state_dict(),
        "generator": generator.get_state(),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def _load_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    try:
        saved = torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
    except Exception as exc:
        raise XFeatureFileError(f"cannot read the checkpoint {str(path)!r} ({exc}); delete it "
                                "to train from the start") from exc
    if not isinstance(saved, dict) or "identity" not in saved:
        raise XFeatureFileError(f"{str(path)!r} is not an SRAE checkpoint; delete it or "
                                "choose another checkpoint path")
    if json.loads(saved["identity"]) != json.loads(json.dumps(identity, sort_keys=True)):
        raise XFeatureFileError(
            f"the checkpoint {str(path)!r} belongs to another training (other data, settings "
            "or seed); resume with the same ones, or delete it to start afresh")
    return saved


def with_overrides(config: SRAEConfig, **changes: Any) -> SRAEConfig:
    """``config`` with ``changes`` (unknown names: a clear error)."""
    known = {f.name for f in fields(SRAEConfig)}
    unknown = [k for k in changes if k not in known]
    if unknown:
        from ..errors import did_you_mean

        hint = did_you_mean(unknown[0], known)
        raise ParameterError(f"unknown SRAE setting {unknown[0]!r}; "
                             f"{hint or 'settings: ' + ', '.join(sorted(known))}")
    return replace(config, **changes)
