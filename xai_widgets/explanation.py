"""The result of :func:`xai_widgets.explain`: a raw map, what it explains, and its pictures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .figures import FIGURE_SUFFIXES, ShowsFigure, writable_path
from .kernels.spec import MethodSpec
from .models import ModelBundle
from .render import Frame, RenderSettings, render_maps


@dataclass
class Explanation(ShowsFigure):
    """A raw map for a batch of images and everything needed to read it.

    ``map``: float32, raw and signed, ``(N, h, w)`` or ``(N, C, H, W)`` for per-channel
    methods. ``targets``: the explained class of each image. ``layer``: the layer the map
    belongs to (``None`` for input-level methods). ``logits``: ``(N, classes)``.
    ``display``: uint8 ``(N, Hd, Wd, 3)``, the photos as the model saw them.
    """

    map: torch.Tensor
    method: MethodSpec
    targets: tuple[int, ...]
    layer: str | None
    params: dict[str, Any]
    logits: torch.Tensor
    display: np.ndarray
    names: list[str]
    bundle: ModelBundle
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.map.shape[0])

    @property
    def probabilities(self) -> torch.Tensor:
        """Softmax of the logits, ``(N, classes)``."""
        return self.logits.float().softmax(dim=1)

    @property
    def target_names(self) -> list[str]:
        return [self.bundle.class_name(t) for t in self.targets]

    @property
    def scores(self) -> torch.Tensor:
        """The explained logit of each image, ``(N,)``."""
        return self.logits[torch.arange(len(self)), torch.tensor(self.targets)]

    @property
    def all_zero(self) -> torch.Tensor:
        """Per image, whether its map is zero everywhere (it shows nothing), ``(N,)`` bool."""
        return self.map.flatten(1).abs().amax(dim=1) == 0

    def top(self, k: int = 5) -> list[list[tuple[int, str, float]]]:
        """Per image, the ``k`` most probable classes as ``(index, name, probability)``."""
        values, indices = self.probabilities.topk(min(k, self.logits.shape[1]), dim=1)
        return [[(int(i), self.bundle.class_name(int(i)), float(v)) for v, i in zip(vs, ix,
                                                                                     strict=True)]
                for vs, ix in zip(values, indices, strict=True)]

    def captions(self) -> list[str]:
        """One line per image: method, class, probability and logit, layer."""
        probabilities = self.probabilities  # computed once for the batch
        empty = self.all_zero.tolist()
        lines = []
        for i, target in enumerate(self.targets):
            line = (f"{self.method.label} · {self.bundle.class_name(target)} "
                    f"(p={float(probabilities[i, target]):.2f}, "
                    f"logit {float(self.logits[i, target]):.2f})")
            line += f" · layer {self.layer}" if self.layer else ""
            lines.append(line + (" · all-zero map" if empty[i] else ""))
        return lines

    def settings(self, **changes: Any) -> RenderSettings:
        """The method's default rendering, updated with ``changes``."""
        return self.method.display.updated(**changes) if changes else self.method.display

    def render(self, **settings: Any) -> list[Frame]:
        """One :class:`~xai_widgets.render.Frame` per image (see :class:`RenderSettings`)."""
        return render_maps(self.map, self.display, self.settings(**settings), self.captions())

    def to_pil(self, index: int = 0, **settings: Any) -> Image.Image:
        """The overlay of image ``index`` as a PIL image (no caption)."""
        return Image.fromarray(self.render(**settings)[index].composite())

    def figure(self, **settings: Any) -> Any:
        """A matplotlib figure: one captioned overlay per image (at most 8)."""
        from matplotlib.figure import Figure

        frames = self.render(**settings)[:8]
        figure = Figure(figsize=(3.6 * len(frames), 3.9), layout="constrained")
        for axes, frame in zip(figure.subplots(1, len(frames), squeeze=False)[0], frames,
                               strict=True):
            axes.imshow(frame.composite())
            axes.set_title(frame.caption.replace(" · ", "\n", 1), fontsize=8)
            axes.set_axis_off()
        return figure

    def save(self, path: str | Path, **settings: Any) -> Path:
        """Save the captioned figure (``.png``, ``.pdf``, ``.svg``, ``.jpg``) or the raw map
        (``.npy``) into an existing folder."""
        path = writable_path(path, (*FIGURE_SUFFIXES, ".npy"), "picture or raw map")
        if path.suffix.lower() == ".npy":
            np.save(path, self.map.cpu().numpy())
        else:
            self.figure(**settings).savefig(path, dpi=150)
        return path

    def __repr__(self) -> str:
        shape = "×".join(str(s) for s in self.map.shape)
        return (f"Explanation({self.method.name}, map {shape}, targets {self.target_names}, "
                f"layer {self.layer!r})")
