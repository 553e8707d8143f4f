"""The model-randomisation sanity check, cascading from the top.

Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim. "Sanity Checks for Saliency Maps."
NeurIPS 2018. arXiv:1810.03292.

A map that explains the model must change when the model's learnt weights are destroyed.
On a deep copy of the model (never the user's), the layers with parameters are randomised
one group after another, from the logits down (cascading: earlier groups stay random), the
method is run again after each group with the same class and layer, and each new map is
compared with the original one: rank correlation of the maps as they rank pixels
(``spearman``) and of their absolute values (``spearman_abs``), and SSIM / HOG correlation
of the maps as displayed, upsampled to the input. A faithful method drops towards 0.

Randomising a layer redraws each of its parameter tensors from a Gaussian with that tensor's
own mean and standard deviation (a local generator seeded by ``seed``): the scale of the
activations is kept, the learnt structure is lost. Buffers (BatchNorm statistics) are kept.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import MetricError, ModelError, ParameterError, did_you_mean
from ..explain import explain
from ..explanation import Explanation
from ..figures import ShowsFigure
from ..kernels.spec import MethodSpec, Progress
from ..models import ModelBundle
from ..render import RenderSettings, normalise, scalar_map, upsample
from ..scope import eval_mode, forward_hooks, model_lock
from . import similarity as sim
from .spec import Case, Column, MetricSpec, number
from .subject import ranking_polarity

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Sanity(ShowsFigure):
    """The cascade and its similarities.

    ``stages``: the deepest module randomised at each stage, top first; ``modules``: the
    modules each stage randomised; ``similarity[name]``: ``(S, N)``, stage × image;
    ``maps``: raw maps, the original then one per stage.
    """

    method: str
    targets: tuple[int, ...]
    layer: str | None
    stages: list[str]
    modules: list[list[str]]
    similarity: dict[str, torch.Tensor]
    maps: list[torch.Tensor]
    display: RenderSettings

    def final(self) -> dict[str, list[float]]:
        """Similarity after the last stage (the whole model randomised), per image."""
        return {name: values[-1].tolist() for name, values in self.similarity.items()}

    def __repr__(self) -> str:
        final = ", ".join(f"{name} {', '.join(f'{v:.2f}' for v in values)}"
                          for name, values in self.final().items())
        return (f"Sanity({self.method}, {len(self.stages)} stages from {self.stages[0]!r} "
                f"down to {self.stages[-1]!r}; after the last: {final})")

    def figure(self, index: int = 0, thumbnails: int = 6) -> Figure:
        """Similarity along the cascade, and the maps of image ``index`` at a few stages."""
        from matplotlib.figure import Figure

        figure = Figure(figsize=(7.5, 5.0), layout="constrained")
        top, bottom = figure.subfigures(2, 1, height_ratios=[1.3, 1])  # type: ignore[misc]
        axes = top.subplots()
        steps = range(len(self.stages) + 1)
        for name, values in self.similarity.items():
            axes.plot(steps, [1.0, *values[:, index].tolist()], "o-", label=name)
        axes.set_xticks(list(steps), ["original", *self.stages], rotation=60, fontsize=6,
                        ha="right")
        axes.set_ylabel("similarity to the original")
        axes.set_ylim(-1.05, 1.05)
        axes.axhline(0, color="grey", lw=0.5)
        axes.legend(fontsize=7)
        axes.set_title(f"{self.method}: cascading randomisation from the top", fontsize=9)
        picks = sorted({round(i * len(self.stages) / max(1, thumbnails - 1))
                        for i in range(thumbnails)})
        row = bottom.subplots(1, len(picks), squeeze=False)[0]
        for cell, stage in zip(row, picks, strict=True):
            unit = _unit(self.maps[stage][index:index + 1], self.display, None)[0]
            cell.imshow(unit.numpy(), cmap=self.display.colormap,
                        vmin=-1 if self.display.signed else 0, vmax=1)
            cell.set_title("original" if stage == 0 else self.stages[stage - 1], fontsize=6)
            cell.set_axis_off()
        return figure


def sanity_check(source: Explanation | ModelBundle | nn.Module, images: Any = None, *,
                 method: str | MethodSpec | None = None, target: Any = None,
                 layer: str | None = None, params: dict[str, Any] | None = None,
                 stages: int | Sequence[str] | None = None,
                 similarity: Sequence[str] = ("spearman", "ssim"), seed: int = 0,
                 progress: Progress | None = None) -> Sanity:
    """Cascading model randomisation (Adebayo et al. 2018) on a deep copy of the model.

    ``source``: an Explanation (its method, targets, layer and parameters are reused) or a
    model with ``method`` (and ``target``, ``layer``, ``params``). ``images``: the images
    explained. ``stages``: ``None`` randomises one module with parameters at a time, from
    the logits down; an integer ``k`` makes ``k`` stages (the top module alone, then ``k − 1``
    groups of about equal size); a list of module names randomises each named module (and
    its submodules) in that order. ``similarity``: any of ``spearman``, ``spearman_abs``,
    ``ssim``, ``hog``. ``progress(fraction, map)`` is called after every stage.
    """
    unknown = [s for s in similarity if s not in sim.SIMILARITIES]
    if unknown or not similarity:
        raise ParameterError(f"unknown similarity {unknown or similarity!r}; choose from "
                             f"{', '.join(sim.SIMILARITIES)}")
    if isinstance(source, Explanation):
        if images is None:
            images = getattr(source, "inputs", None)
        if images is None:
            raise MetricError("the sanity check explains the images again: pass them, "
                              "sanity_check(explanation, images)")
        original = source
        bundle = source.bundle
    else:
        if method is None:
            raise MetricError("name the method to check, e.g. sanity_check(model, images, "
                              "method='grad_cam')")
        bundle = ModelBundle.wrap(source)
        original = explain(bundle, images, method, target=target, layer=layer,
                           **(params or {}))
    inputs = bundle.prepare(images).inputs
    if len(inputs) != len(original):
        raise MetricError(f"{len(inputs)} images for an explanation of {len(original)}")

    copied = _deep_copy(bundle)
    groups = _stages(copied.model, inputs[:1].to(copied.device), stages)
    generator = torch.Generator().manual_seed(seed)
    maps = [original.map]
    for done, group in enumerate(groups, start=1):
        _randomise(copied.model, group, generator)
        again = explain(copied, inputs, original.method, target=list(original.targets),
                        layer=original.layer, **original.params)
        maps.append(again.map)
        if progress is not None:
            progress(done / len(groups), again.map)
    display = original.method.display
    size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
    scores = {name: torch.stack([_similarity(name, maps[0], m, display, size)
                                 for m in maps[1:]]) for name in similarity}
    return Sanity(original.method.name, original.targets, original.layer,
                  [group[-1] for group in groups], groups, scores, maps, display)


def check_stages(stages: Any) -> None:
    """A :class:`ParameterError` unless ``stages`` is an integer >= 1 (a number of stages)."""
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise ParameterError(f"stages is None, an integer >= 1 or a list of module names, got "
                             f"{stages!r}")


#: the similarities a folder evaluation records (HOG is slower and adds little)
FOLDER_SIMILARITIES = ("spearman", "spearman_abs", "ssim")


def measure(case: Case, _names: tuple[str, ...]) -> dict[str, Any]:
    """``sanity_<similarity>`` once the whole cascade is random, for one image."""
    result = sanity_check(case.explanation, case.inputs, stages=case.settings.sanity_stages,
                          similarity=FOLDER_SIMILARITIES, seed=case.settings.seed)
    return {f"sanity_{name}": number(values[0]) for name, values in result.final().items()}


SPECS = (
    MetricSpec("sanity", "Sanity check", "similarity to the original map once the model's "
               "weights are randomised (a faithful map changes)",
               "Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim. Sanity Checks for Saliency "
               "Maps. NeurIPS 2018. arXiv:1810.03292",
               tuple(Column(f"sanity_{name}", f"{name} after randomisation", "lower")
                     for name in sim.SIMILARITIES), "iterative", measure),
)


# --------------------------------------------------------------------------- helpers


def _deep_copy(bundle: ModelBundle) -> ModelBundle:
    try:
        model = copy.deepcopy(bundle.model)
    except Exception as exc:  # deepcopy fails in many ways on exotic modules
        raise ModelError(f"the sanity check randomises a copy of the model, and this model "
                         f"cannot be deep-copied ({type(exc).__name__}: {exc})") from exc
    return ModelBundle(model, bundle.preprocessing, bundle.class_names,
                       name=f"{bundle.name} (randomised copy)")


def _stages(model: nn.Module, probe: torch.Tensor, stages: int | Sequence[str] | None
            ) -> list[list[str]]:
    """Groups of module names to randomise, top (logits) first."""
    names = {module: name for name, module in model.named_modules()}
    called: dict[str, None] = {}

    def record(module: nn.Module, _args: Any, _output: Any) -> None:
        called.setdefault(names[module], None)

    owners = {m: record for m in model.modules() if next(m.parameters(recurse=False), None)
              is not None}
    with model_lock(model), torch.no_grad(), eval_mode(model), forward_hooks(owners):
        model(probe)
    top_first = list(reversed(called))
    if not top_first:
        raise ModelError("the model has no parameters that its forward pass uses: there is "
                         "nothing to randomise")
    if stages is None:
        return [[name] for name in top_first]
    if isinstance(stages, (int, bool)):
        check_stages(stages)
        if stages == 1:
            return [top_first]
        rest = top_first[1:]
        parts = min(stages - 1, len(rest))
        bounds = [round(i * len(rest) / parts) for i in range(parts + 1)] if parts else [0]
        return [top_first[:1]] + [rest[a:b] for a, b in itertools.pairwise(bounds)
                                  if b > a]
    groups: list[list[str]] = []
    taken: set[str] = set()
    for prefix in stages:
        inside = [n for n in top_first if (n == prefix or n.startswith(prefix + "."))
                  and n not in taken]
        if not inside:
            hint = did_you_mean(str(prefix), [n for n, _ in model.named_modules() if n])
            raise MetricError(f"no module with parameters at or under {prefix!r} left to "
                              f"randomise; {hint or 'stages name modules of the model'}")
        taken.update(inside)
        groups.append(inside)
    return groups


def _randomise(model: nn.Module, group: list[str], generator: torch.Generator) -> None:
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in group:
            for parameter in modules[name].parameters(recurse=False):
                values = parameter.detach().float().cpu()
                spread = float(values.std()) if values.numel() > 1 else 0.0
                noise = torch.randn(values.shape, generator=generator) * spread + values.mean()
                parameter.copy_(noise.to(parameter.dtype))


def _unit(maps: torch.Tensor, display: RenderSettings, size: tuple[int, int] | None
          ) -> torch.Tensor:
    """Raw maps -> the unit maps a person sees ``(N, H, W)``, at ``size`` if given."""
    unit = normalise(scalar_map(maps, display), display.signed, display.clip_percentile)
    return unit if size is None else upsample(unit, size, "bilinear")


def _similarity(name: str, before: torch.Tensor, after: torch.Tensor, display: RenderSettings,
                size: tuple[int, int]) -> torch.Tensor:
    """Similarity ``name`` of two batches of raw maps, ``(N,)``."""
    if name in ("spearman", "spearman_abs"):
        polarity = ranking_polarity(display) if name == "spearman" else "absolute"
        ranked = display.updated(polarity=polarity)
        return sim.spearman(scalar_map(before, ranked), scalar_map(after, ranked))
    shown_before, shown_after = _unit(before, display, size), _unit(after, display, size)
    if name == "ssim":
        return sim.ssim(shown_before, shown_after, data_range=2.0 if display.signed else 1.0)
    return sim.hog(shown_before, shown_after)
