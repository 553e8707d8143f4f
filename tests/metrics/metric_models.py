"""Models whose scores are known by hand, for the metric tests."""

from __future__ import annotations

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
