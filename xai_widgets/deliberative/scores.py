"""Difficulty scores ``s(x)``: how hard an image is for the classifier (higher = harder).

* ``cs`` (classification score): ``s = 1 − max_c p_c``, ``p = softmax(z)``;
* ``entropy``: the normalised entropy ``s = −Σ_c p_c log p_c / log C`` (in [0, 1]);
* ``hp``: a hardness predictor, a small module on the features of one layer of the model
  (:class:`~xai_widgets.deliberative.hardness.HardnessPredictor`, or any user module that maps
  those features to one pre-sigmoid value per image). Which output is explained is explicit:
  ``hp_score="sigmoid"`` gives ``s = σ(z)``, ``"logit"`` gives ``s = z``. (The original
  scripts mixed the two; with ``z`` the second-order term of the gradient–Hessian map is 0.)

``cs`` and ``entropy`` are functions of the logits only, so their gradient at any layer is the
backward of the seed ``∂s/∂z`` from the logits: one more row of the batched class backward.

Wang, Vasconcelos. "Deliberative Explanations: visualizing network insecurities." NeurIPS 2019.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ModelError, ParameterError, did_you_mean

DIFFICULTIES = ("cs", "entropy", "hp")
HP_SCORES = ("sigmoid", "logit")
LABELS = {"cs": "classification score 1 − max p", "entropy": "normalised entropy",
          "hp": "hardness predictor"}


def classification_score(logits: torch.Tensor) -> torch.Tensor:
    """``1 − max_c softmax(z)_c`` per row, ``(N,)``."""
    return 1.0 - logits.softmax(dim=1).amax(dim=1)


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``−Σ_c p_c log p_c / log C`` per row, ``(N,)``, in [0, 1]."""
    classes = logits.shape[1]
    if classes < 2:
        raise ModelError("the normalised entropy needs at least 2 classes; this model has 1")
    log_p = logits.log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1) / math.log(classes)


LOGIT_SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "cs": classification_score, "entropy": normalised_entropy}


@dataclass(frozen=True, eq=False)
class DifficultySpec:
    """A resolved difficulty: ``name`` (cs, entropy, hp); for hp the ``predictor``, the layer
    it reads and which of its outputs is the score (``output``: sigmoid or logit)."""

    name: str
    predictor: nn.Module | None = None
    layer: str | None = None
    output: str | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.name, id(self.predictor), self.layer, self.output)

    @property
    def label(self) -> str:
        if self.name == "hp":
            return f"hardness predictor ({'σ(z)' if self.output == 'sigmoid' else 'z'})"
        return LABELS[self.name]

    def score_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return LOGIT_SCORES[self.name](logits)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """The predictor's pre-sigmoid ``z`` ``(N,)`` on ``features`` (in the graph if they are);
        a clear error if its output has the wrong shape."""
        assert self.predictor is not None
        parameter = next(self.predictor.parameters(), None)
        if parameter is not None and parameter.device != features.device:
            raise ModelError(f"the hardness predictor is on {parameter.device}, the model's "
                             f"features on {features.device}; move it first: "
                             f"predictor.to({str(features.device)!r})")
        out = self.predictor(features)
        if not isinstance(out, torch.Tensor) or out.ndim not in (1, 2) \
                or out.shape[0] != features.shape[0] or (out.ndim == 2 and out.shape[1] != 1):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(
                f"the hardness predictor returned {shape} for {features.shape[0]} images; it "
                f"must return one pre-sigmoid value per image, shape ({features.shape[0]},) or "
                f"({features.shape[0]}, 1), from the features {tuple(features.shape)} of layer "
                f"{self.layer!r} (train one with deliberative.train_hardness_predictor)")
        return out.reshape(-1)

    def score_from_z(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z) if self.output == "sigmoid" else z


def resolve_difficulty(difficulty: Any, predictor: nn.Module | None, layer: str,
                       hp_score: str | None = None) -> DifficultySpec:
    """``difficulty``: ``"cs"``, ``"entropy"``, ``"hp"`` (with ``predictor=``), or a predictor
    module itself. ``layer``: the explained layer (what a bare predictor module reads)."""
    if isinstance(difficulty, nn.Module):
        predictor, difficulty = difficulty, "hp"
    if not isinstance(difficulty, str) or difficulty not in DIFFICULTIES:
        hint = did_you_mean(difficulty, DIFFICULTIES) if isinstance(difficulty, str) else ""
        raise ParameterError(
            f"unknown difficulty {difficulty!r}; accepted: 'cs' (1 − max probability), "
            "'entropy' (normalised entropy), 'hp' with predictor=..., or a hardness-predictor "
            f"module{'; ' + hint if hint else ''}")
    if difficulty != "hp":
        return DifficultySpec(difficulty)
    if predictor is None:
        raise ParameterError(
            "difficulty='hp' needs a hardness predictor: train one with "
            "deliberative.train_hardness_predictor(bundle, folder, labels) and pass "
            "predictor=it (or difficulty=it); 'cs' and 'entropy' need none")
    if not isinstance(predictor, nn.Module):
        raise ParameterError(f"a hardness predictor is a torch.nn.Module, got "
                             f"{type(predictor).__name__}")
    output = hp_score if hp_score is not None else getattr(predictor, "output", "sigmoid")
    if output not in HP_SCORES:
        raise ParameterError(f"hp_score must be 'sigmoid' (s = σ(z)) or 'logit' (s = z, the "
                             f"pre-sigmoid output), got {output!r}")
    read = getattr(predictor, "layer", None) or layer
    return DifficultySpec("hp", predictor, str(read), output)
