"""A synthetic problem with a shared part, trained in the test: class A has parts {P, Q}, class
B {P, R}, class C {Q, R} (so that P is needed: Q alone is A or C). On images with P at full
strength and Q, R faint, the network hesitates between A and B, and the A–B insecurity's top
segment must lie on P, far above chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import bundle
from torch import nn

from xai_widgets import deliberative as dl

SIZE, PATCH, SLOTS = 16, 4, 16
CLASSES = {0: "PQ", 1: "PR", 2: "QR"}


def parts() -> dict[str, torch.Tensor]:
    shapes = {name: torch.zeros(3, PATCH, PATCH) for name in "PQR"}
    shapes["P"][0] = 1.0
    shapes["P"][1, ::2] = 0.5  # red with green stripes
    shapes["Q"][1] = 1.0
    shapes["R"][2] = 1.0
    return shapes


def images(count: int, generator: torch.Generator, strengths: dict[str, float] | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, labels and where each part is ``(N, 3, H, W)``; parts in distinct 4×4 slots.
    With ``strengths`` every image holds P, Q and R at those strengths (label -1)."""
    shapes = parts()
    x = 0.1 * torch.rand(count, 3, SIZE, SIZE, generator=generator)
    y = torch.randint(0, 3, (count,), generator=generator)
    where = torch.zeros(count, 3, SIZE, SIZE, dtype=torch.bool)
    for i in range(count):
        slots = torch.randperm(SLOTS, generator=generator)[:3]
        names = "PQR" if strengths is not None else CLASSES[int(y[i])]
        for slot, name in zip(slots.tolist(), names, strict=False):
            r, c = divmod(slot, SIZE // PATCH)
            rows, cols = slice(r * PATCH, (r + 1) * PATCH), slice(c * PATCH, (c + 1) * PATCH)
            x[i, :, rows, cols] += (1.0 if strengths is None else strengths[name]) * shapes[name]
            where[i, "PQR".index(name), rows, cols] = True
    return x, (y if strengths is None else torch.full((count,), -1)), where


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def trained() -> Net:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = Net()
    x, y, _ = images(512, generator)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(100):
        index = torch.randint(0, len(x), (32,), generator=generator)
        loss = nn.functional.cross_entropy(net(x[index]), y[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()
    test_x, test_y, _ = images(128, generator)
    with torch.no_grad():
        assert float((net(test_x).argmax(dim=1) == test_y).float().mean()) > 0.95
    return net


@pytest.mark.parametrize("difficulty", ["entropy", "cs"])
def test_the_insecurity_of_a_and_b_lies_on_their_shared_part(trained: Net,
                                                             difficulty: str) -> None:
    generator = torch.Generator().manual_seed(1)
    x, _, where = images(16, generator, strengths={"P": 1.0, "Q": 0.3, "R": 0.3})
    b = bundle(trained, SIZE, classes=3)
    results = dl.analyse(b, x, difficulty=difficulty, top_classes=3)
    area = PATCH * PATCH / SIZE**2  # P's share of the image: what chance would hit
    precision, recall, on_q = [], [], []
    for i, r in enumerate(results):
        assert {r.classes[0][0], r.classes[1][0]} == {0, 1}  # A and B lead: the network hesitates
        segment = r.segment((0, 1), area=area)
        p_mask, q_mask = where[i, 0], where[i, 1]
        precision.append(float((segment.mask & p_mask).sum() / segment.mask.sum()))
        recall.append(float((segment.mask & p_mask).sum() / p_mask.sum()))
        on_q.append(float((segment.mask & q_mask).sum() / segment.mask.sum()))
    assert np.mean(precision) > 0.6 > 8 * area
    assert np.mean(recall) > 0.6
    assert np.mean(on_q) < area  # Q is evidence for A only: no hesitation there
