"""Grad-CAM: hand-computed values, the CAM identity, the NumPy reference, batching."""

from __future__ import annotations

import pytest
import torch
import torchvision
from support import load_reference, reference_nets
from tiny_models import OneConv, bundle

import xai_widgets as xw

REFERENCE = load_reference("grad_cam")
# (variant, our layer name) -> the layer of the NumPy reference with the same tensor
LAYERS = [
    ("module", "features.0", "features.0"), ("module", "features.1", "features.1"),
    ("module", "features.2", "features.2"), ("module", "features.3", "features.3"),
    ("inplace", "features", "features.3"),
    ("functional", "features.1", "features.1"), ("functional", "features", "features.2"),
]


def test_one_conv_by_hand() -> None:
    weight = [[2.0, -1.0], [0.5, 3.0]]
    p, q = torch.rand(4, 4), torch.rand(4, 4)
    x = torch.stack([p, q, torch.rand(4, 4)])[None]
    for c in (0, 1):
        e = xw.explain(bundle(OneConv(weight), size=4), x, "grad_cam", target=c, layer="conv")
        expected = (weight[c][0] * p + weight[c][1] * q) / 16
        torch.testing.assert_close(e.map[0], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("variant", "layer", "reference_layer"), LAYERS)
def test_matches_numpy_reference(variant: str, layer: str, reference_layer: str) -> None:
    net = reference_nets.tiny_net(REFERENCE, variant)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    targets = REFERENCE["targets"].tolist()
    e = xw.explain(bundle(net, size=8), x, "grad_cam", target=targets, layer=layer)
    expected = torch.tensor(REFERENCE[f"map:{reference_layer}"], dtype=torch.float32)
    torch.testing.assert_close(e.map, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: reference_nets.tiny_net(REFERENCE),
                                  lambda: torchvision.models.resnet18(num_classes=7)])
def test_equals_cam_over_cells_on_a_gap_head(make) -> None:
    net = make().eval()
    b = bundle(net, size=64)
    x = torch.randn(2, 3, 64, 64)
    cam = xw.explain(b, x, "cam", target=[1, 3])
    grad_cam = xw.explain(b, x, "grad_cam", target=[1, 3], layer=cam.layer)
    cells = cam.map.shape[-1] * cam.map.shape[-2]
    torch.testing.assert_close(grad_cam.map, cam.map / cells, rtol=1e-5, atol=1e-7)


def test_batch_equals_one_by_one() -> None:
    net = torchvision.models.resnet18(num_classes=7).eval()
    b = bundle(net, size=64)
    x = torch.randn(3, 3, 64, 64)
    together = xw.explain(b, x, "grad_cam", target=[0, 4, 6], layer="layer3")
    for i, t in enumerate([0, 4, 6]):
        alone = xw.explain(b, x[i:i + 1], "grad_cam", target=t, layer="layer3")
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-4, atol=1e-6)
