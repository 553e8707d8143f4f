"""Contrastive excitation backprop: the NumPy reference, c-EB = EB(target) − EB(dual unit),
zero total, the embedded model."""

from __future__ import annotations

import copy

import pytest
import torch
from support import load_reference, reference_nets
from tiny_models import ARCHITECTURES, bundle, randomise_batchnorm

import xai_widgets as xw
from xai_widgets.trace import INPUT, TraceSet

REFERENCE = load_reference("contrastive_excitation_backprop")


@pytest.mark.parametrize("layer", ["features.0", "features.1", "features.2", "features.3"])
def test_matches_numpy_reference(layer: str) -> None:
    net = reference_nets.tiny_net(REFERENCE)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    targets = REFERENCE["targets"].tolist()
    b = bundle(net, size=8)
    e = xw.explain(b, x, "contrastive_excitation_backprop", target=targets, layer=layer)
    expected = torch.tensor(REFERENCE[f"map:{layer}"], dtype=torch.float32)
    torch.testing.assert_close(e.map, expected, rtol=1e-5, atol=1e-7)
    assert e.extras["mass"].abs().max() < 1e-5
    at_input = TraceSet(b, x).get("contrastive_excitation").gradient(tuple(targets), INPUT)
    torch.testing.assert_close(at_input, torch.tensor(REFERENCE["mass:input"]).float(),
                               rtol=1e-5, atol=1e-7)


def test_equals_excitation_of_the_target_minus_that_of_its_dual() -> None:
    net = randomise_batchnorm(ARCHITECTURES["inplace_resnet"]()).eval()
    dual = copy.deepcopy(net)
    with torch.no_grad():
        dual.fc.weight.neg_()
    x = torch.randn(2, 3, 16, 16)
    contrastive = xw.explain(bundle(net), x, "contrastive_excitation_backprop", target=[1, 2],
                             layer="layer1")
    target = xw.explain(bundle(net), x, "excitation_backprop", target=[1, 2], layer="layer1")
    opposite = xw.explain(bundle(dual), x, "excitation_backprop", target=[1, 2],
                          layer="layer1")
    torch.testing.assert_close(contrastive.map, target.map - opposite.map, rtol=1e-5,
                               atol=1e-7)


def test_embedded_efficientnet(embedded, photos) -> None:
    e = xw.explain(embedded, photos["chelsea"], "contrastive_excitation_backprop",
                   target="tabby", layer="blocks.5")
    assert e.map.shape == (1, 7, 7)
    assert torch.isfinite(e.map).all()
    assert e.map.max() > 0 > e.map.min()
    assert abs(float(e.extras["mass"])) <= 1.0
