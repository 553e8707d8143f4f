"""Models whose scores are known by hand, for the metric tests."""

from __future__ import annotations

import os

import torch
from torch import nn


class RegionSum(nn.Module):
    """Two logits: ``Σ_{p ∈ region} w(p) · x_0(p)`` and a constant ``bias``.

    ``region``: bool ``(H, W)``; ``weight``: ``(H, W)`` (default 1 on the region). On the
    all-ones image with unit weights the first logit counts the region's pixels still shown.
    """

    def __init__(self, region: torch.Tensor, weight: torch.Tensor | None = None,
                 bias: float = 0.0) -> None:
        super().__init__()
        w = region.float() if weight is None else weight * region
        self.weight = nn.Parameter(w.clone())
        self.bias = nn.Parameter(torch.tensor(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = (x[:, 0] * self.weight).sum(dim=(1, 2))
        return torch.stack([first, self.bias.expand_as(first)], dim=1)


def top_left(size: int, side: int) -> torch.Tensor:
    """A bool ``(size, size)`` mask of the top-left ``side × side`` square."""
    region = torch.zeros(size, size, dtype=torch.bool)
    region[:side, :side] = True
    return region


class TwoBranch(nn.Module):
    """Two independent conv branches; logit ``k`` is ``mean(relu(branch_k(x)))``, so the
    maps of class 0 do not depend on branch ``b`` at all."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.a(x).relu().mean(dim=(1, 2, 3)),
                            self.b(x).relu().mean(dim=(1, 2, 3))], dim=1)


class Fragile(nn.Module):
    """A small conv net (as ``tiny_models.PlainNet``) for the cluster tests: each unpickling
    appends the process id to ``log`` (how often a worker loads the model), and the first
    forward pass in a Dask worker, while ``marker`` does not exist, creates it and kills the
    worker process (a machine lost mid-task)."""

    def __init__(self, log: str, marker: str | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 5)
        self.log, self.marker = log, marker

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        with open(self.log, "a") as stream:
            stream.write(f"{os.getpid()}\n")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.marker is not None and not os.path.exists(self.marker) and _in_worker():
            open(self.marker, "w").close()
            os._exit(1)
        return self.head(self.features(x).mean(dim=(2, 3)))


def _in_worker() -> bool:
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True
