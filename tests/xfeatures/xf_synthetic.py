"""A synthetic problem with two known concepts: a red square and a blue ring at random places.

A tiny CNN learns three scores in a few seconds: ``3·[red square]`` (class "red"),
``3·[blue ring]`` ("blue") and their sum ("patterns", the class the x-features explain); each
pattern is present with probability 1/2, on a grey noisy background. The two single-pattern
classes make the CNN keep the patterns apart in its embedding, as a real CNN keeps the
concepts its other classes need.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import xai_widgets as xw

SIZE = 32
SQUARE = 6
RING = 9  # outer diameter


def make_images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``(N, 3, 32, 32)`` in [0, 1], presence ``(N, 2)`` (red, blue) and the boxes
    ``(N, 2, 4)`` (top, left, bottom, right; -1 when absent)."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.45 + 0.08 * torch.rand(count, 3, SIZE, SIZE, generator=generator)
    present = torch.rand(count, 2, generator=generator) < 0.5
    boxes = torch.full((count, 2, 4), -1, dtype=torch.long)
    yy, xx = torch.meshgrid(torch.arange(RING), torch.arange(RING), indexing="ij")
    centre = (RING - 1) / 2
    radius = ((yy - centre) ** 2 + (xx - centre) ** 2).sqrt()
    ring = (radius <= centre + 0.2) & (radius >= centre - 1.6)
    for i in range(count):
        while True:
            spots = torch.randint(0, SIZE - RING, (2, 2), generator=generator)
            (ty, tx), (ry, rx) = spots.tolist()
            apart = abs(ty - ry) > RING or abs(tx - rx) > RING
            if apart or not bool(present[i].all()):
                break
        if present[i, 0]:
            red = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
            images[i, :, ty:ty + SQUARE, tx:tx + SQUARE] = red
            boxes[i, 0] = torch.tensor([ty, tx, ty + SQUARE, tx + SQUARE])
        if present[i, 1]:
            patch = images[i, :, ry:ry + RING, rx:rx + RING]
            colour = torch.tensor([0.1, 0.2, 0.9]).view(3, 1, 1).expand_as(patch)
            images[i, :, ry:ry + RING, rx:rx + RING] = torch.where(ring, colour, patch)
            boxes[i, 1] = torch.tensor([ry, rx, ry + RING, rx + RING])
    return images, present, boxes


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


PREPROCESSING = xw.Preprocessing(resize=None, crop=(SIZE, SIZE), mean=(0.5, 0.5, 0.5),
                                 std=(0.25, 0.25, 0.25))


def trained_bundle(seed: int = 0, steps: int = 200) -> xw.ModelBundle:
    """TinyCNN trained to give the logits (3·red, 3·blue, 3·red + 3·blue)."""
    torch.manual_seed(seed)
    model = TinyCNN()
    images, present, _ = make_images(512, seed=100 + seed)
    inputs = PREPROCESSING.normalise(images)
    target = 3.0 * torch.cat([present.float(), present.float().sum(dim=1, keepdim=True)], 1)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(0, len(inputs), (32,), generator=generator)
        loss = F.mse_loss(model(inputs[batch]), target[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    return xw.ModelBundle(model, PREPROCESSING, ["red", "blue", "patterns"], name="tiny")


def write_tree(root: Path, inputs: torch.Tensor, present: torch.Tensor, count: int = 40) -> Path:
    """The first ``count`` images as PNG files of an ImageFolder tree: ``patterns/`` (both
    patterns) and ``red/`` (the rest)."""
    for i in range(count):
        folder = root / ("patterns" if bool(present[i].all()) else "red")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = PREPROCESSING.denormalise(inputs[i])
        array = (pixels.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(array).save(folder / f"{i}.png")
    return root


@dataclass
class Synthetic:
    """The session's synthetic problem: the trained CNN, the images (normalised), which
    pattern each holds and where, and their features for the class "patterns"."""

    bundle: xw.ModelBundle
    inputs: torch.Tensor
    present: torch.Tensor
    boxes: torch.Tensor
    data: Any  # xfeatures.FeatureSet
