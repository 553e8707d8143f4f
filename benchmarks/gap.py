"""Where the peers' guided backprop is not guided backprop: computed, not asserted.

For each model, at batch 1, the input maps of ours (``guided_backprop``), of the peers'
guided backprop, and the plain gradient (``saliency``), compared by relative L2 distance
``‖a − b‖ / ‖b‖``. On a plain ReLU network (ResNet-18) all guided maps agree; on ReLU6
(MobileNetV2) a peer that only hooks ``nn.ReLU`` returns the plain gradient; on DenseNet the
last ReLU is a functional call (``F.relu``) that module hooks cannot reach.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from . import ours
from .peers import PGC, available
from .workload import Workload, load

#: model -> what its rectifiers are
MODELS = {
    "resnet18": "nn.ReLU modules (in place, reused): control",
    "mobilenet_v2": "nn.ReLU6 modules",
    "densenet121": "nn.ReLU modules + a functional F.relu before the pooling",
}


@dataclass
class GapRow:
    """Relative L2 distances on one model: the guided rule's effect (ours vs the plain
    gradient) and each peer's distance to ours and to the plain gradient."""

    model: str
    rectifiers: str
    ours_vs_gradient: float
    peers: dict[str, tuple[float, float]]  # peer -> (vs ours, vs plain gradient)


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _peer_maps() -> dict[str, Callable[[Workload], torch.Tensor]]:
    """Each installed peer's guided backprop as an ``(1, 3, H, W)`` tensor."""
    return {peer.label: _as_map(peer.make, channels_last=peer.library == PGC)
            for peer in available("guided_backprop")}


def _as_map(make: Callable[[Workload], Callable[[], object]],
            channels_last: bool) -> Callable[[Workload], torch.Tensor]:
    def run(work: Workload) -> torch.Tensor:
        out = make(work)()
        if channels_last:  # pytorch-grad-cam: an (H, W, 3) array of the first image
            return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)[None]
        assert isinstance(out, torch.Tensor)
        return out.detach()
    return run


def run(models: dict[str, str] | None = None) -> list[GapRow]:
    """One row per model (batch 1)."""
    rows = []
    peers = _peer_maps()
    for name, rectifiers in (models or MODELS).items():
        work = load(name, 1)
        guided = ours.one_shot(work, "guided_backprop")().map
        gradient = ours.one_shot(work, "saliency")().map
        found = {label: fn(work) for label, fn in peers.items()}
        rows.append(GapRow(name, rectifiers, relative_l2(guided, gradient),
                           {label: (relative_l2(m, guided), relative_l2(m, gradient))
                            for label, m in found.items()}))
    return rows

