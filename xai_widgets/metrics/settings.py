"""The settings of a folder evaluation: one frozen object, checked once, before any image.

Everything a run's numbers depend on is a field of :class:`EvaluationSettings` and goes into
the results file's header, so that a resumed run (or a shard merged with others) is known to
use the same. A wrong value raises at construction (methods, metrics, method parameters,
shard, metric options) or, for what needs the model, in :meth:`EvaluationSettings.check`
(the layer, ``pixels_per_step`` against the input size): never as one failure per image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import MetricError, ParameterError, did_you_mean
from ..kernels import get_method
from ..models import ModelBundle
from .deletion import Score, check_pixels_per_step, check_score, check_substrate
from .pointing import check_tolerance
from .registry import choose, get_metric
from .sanity import check_stages
from .subject import check_chunk_size
from .tradeoff import check_thresholds


@dataclass(frozen=True)
class EvaluationSettings:
    """What a folder evaluation computes.

    ``methods``: method names; ``metrics``: metric names (see
    :data:`~xai_widgets.metrics.REGISTRY`; each a sequence or a comma-separated string);
    ``layer``: for the methods that take one; ``method_params``: parameters by method name.
    ``labels`` / ``boxes``: CSV files (``image,label`` and ``image,x0,y0,x1,y1`` rows).
    ``start``, ``stop``, ``stride``: the shard, ``files[start:stop:stride]``. ``seed``: of the
    sanity check's randomisation (and, on the command line, of a model drawn with
    ``--weights none``). The metric options: ``pixels_per_step``, ``deletion_substrate``,
    ``insertion_substrate``, ``score``, ``chunk_size`` (:func:`.deletion_insertion`; the
    chunk size also of :func:`.tradeoff`), ``tolerance`` (:func:`.pointing_game`),
    ``thresholds`` (:func:`.tradeoff`), ``sanity_stages`` (:func:`.sanity_check`).
    """

    methods: tuple[str, ...] = ("grad_cam",)
    metrics: tuple[str, ...] = ("deletion", "insertion")
    layer: str | None = None
    method_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    labels: Path | None = None
    boxes: Path | None = None
    start: int = 0
    stop: int | None = None
    stride: int = 1
    seed: int = 0
    pixels_per_step: int | None = None
    deletion_substrate: str = "zeros"
    insertion_substrate: str = "blur"
    score: Score = "probability"
    chunk_size: int | None = None
    tolerance: float = 15.0
    thresholds: tuple[float, ...] = (0.0,)
    sanity_stages: int = 4

    def __post_init__(self) -> None:
        methods = self.methods.split(",") if isinstance(self.methods, str) else self.methods
        names = tuple(dict.fromkeys(get_method(m.strip() if isinstance(m, str) else m).name
                                    for m in methods if not isinstance(m, str) or m.strip()))
        if not names:
            raise ParameterError("give at least one method, e.g. methods=['grad_cam']")
        metrics = choose(self.metrics)
        files = {name: None if value is None else Path(value)
                 for name, value in (("labels", self.labels), ("boxes", self.boxes))}
        for name, path in files.items():
            if path is not None and not path.is_file():
                raise MetricError(f"no {name} file at {str(path)!r}; give a CSV file (see "
                                  "evaluate_folder's documentation for its rows)")
        for metric in metrics:
            spec = get_metric(metric)
            if spec.needs_boxes and files["boxes"] is None:
                raise MetricError(f"the {spec.label.lower()} needs the objects' boxes: give "
                                  "boxes= (a CSV file of image,x0,y0,x1,y1 rows)")
            if spec.needs_labels and files["labels"] is None:
                raise MetricError(f"the {spec.label.lower()} needs the images' labels: give "
                                  "labels= (a CSV file of image,label rows)")
        for name in ("start", "stride", "seed", *(("stop",) if self.stop is not None else ())):
            value = getattr(self, name)
            low = 1 if name == "stride" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.layer is not None and not any(get_method(m).takes_layer for m in names):
            raise ParameterError(f"layer={self.layer!r}, but none of {', '.join(names)} takes "
                                 "a layer; drop it or add a layer method such as 'grad_cam'")
        if self.pixels_per_step is not None:
            check_pixels_per_step(self.pixels_per_step, None)
        check_chunk_size(self.chunk_size, torch.device("cpu"))
        check_score(self.score)
        check_substrate(self.deletion_substrate)
        check_substrate(self.insertion_substrate)
        check_tolerance(self.tolerance)
        check_stages(self.sanity_stages)
        given = {get_method(name).name: dict(params) for name, params in
                 dict(self.method_params).items()}
        checked = _params(names, given)
        values = {"methods": names, "metrics": metrics, **files,
                  "method_params": {name: {key: checked[name][key] for key in params}
                                    for name, params in given.items()},
                  "thresholds": tuple(check_thresholds(self.thresholds)),
                  "tolerance": float(self.tolerance)}
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def updated(self, **changes: Any) -> EvaluationSettings:
        """A copy with ``changes`` (field names), checked again."""
        fields = [f.name for f in dataclasses.fields(self)]
        for name in changes:
            if name not in fields:
                hint = did_you_mean(name, fields) or f"the settings are {', '.join(fields)}"
                raise ParameterError(f"unknown setting {name!r} of a folder evaluation; {hint}")
        return dataclasses.replace(self, **changes)

    def check(self, bundle: ModelBundle) -> None:
        """The checks that need the model: the layer resolves for every method that takes
        one, and ``pixels_per_step`` fits its input."""
        if self.pixels_per_step is not None and any(
                get_metric(m).name in ("deletion", "insertion") for m in self.metrics):
            check_pixels_per_step(self.pixels_per_step, bundle.preprocessing.crop)
        for method in self.methods:
            spec = get_method(method)
            if spec.takes_layer:
                spec.resolve_layer(bundle, self.layer)

    def header(self) -> dict[str, Any]:
        """The settings as the results file's header records them (JSON values; the label and
        box files by name and SHA-256 of their bytes). ``stop`` is not among them: a run
        resumed with a later stop (or none) extends the same shard."""
        files = {name: None if path is None else
                 {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
                 for name, path in (("labels", self.labels), ("boxes", self.boxes))}
        options = {name: getattr(self, name) for name in (
            "pixels_per_step", "deletion_substrate", "insertion_substrate", "score",
            "chunk_size", "tolerance", "sanity_stages")}
        return {"methods": list(self.methods), "metrics": list(self.metrics),
                "layer": self.layer, "params": self.params(),
                **files, "shard": {"start": self.start, "stride": self.stride},
                "seed": self.seed, "options": {**options, "thresholds": list(self.thresholds)}}

    def params(self) -> dict[str, dict[str, Any]]:
        """Every method's parameters, defaults included (``method_params`` holds those given)."""
        return _params(self.methods, self.method_params)

    def shard(self) -> slice:
        """The images of this shard: ``files[shard]``."""
        return slice(self.start, self.stop, self.stride)


def _params(methods: tuple[str, ...], given: Mapping[str, Mapping[str, Any]]
            ) -> dict[str, dict[str, Any]]:
    """Every method's parameters, defaults included, each checked by the method's spec;
    ``given``: by canonical method name."""
    for name in given:
        if name not in methods:
            raise ParameterError(f"method_params names {name!r}, which is not one of the "
                                 f"methods {', '.join(methods)}")
    checked = {name: get_method(name).validate(dict(given.get(name, {}))) for name in methods}
    for name, values in checked.items():
        for key, value in values.items():
            plain = value is None or isinstance(value, (bool, int, str)) or (
                isinstance(value, float) and math.isfinite(value))
            if not plain:
                raise ParameterError(f"{name}: parameter {key!r} is {type(value).__name__}; a "
                                     "folder evaluation records its parameters in the results "
                                     "file, so they must be numbers, strings or booleans")
    return checked
