"""Candidate layers from one dry run: shapes, aliases, reused and in-place modules, defaults,
name resolution with suggestions."""

from __future__ import annotations

import pytest
import torch
import torchvision
from tiny_models import InplaceResNet, Mlp, bundle

import xai_widgets as xw


@pytest.fixture(scope="module")
def resnet18() -> xw.LayerCatalog:
    return xw.ModelBundle.wrap(torchvision.models.resnet18()).layers


def test_resnet_candidates(resnet18: xw.LayerCatalog) -> None:
    assert resnet18.default == "layer4"
    assert resnet18["layer4"].shape == (512, 7, 7)
    assert resnet18["layer1"].shape == (64, 56, 56)
    assert "layer4.1" in resnet18["layer4"].aliases  # the same tensor, one candidate
    assert resnet18.resolve("layer4.1") == "layer4"
    assert resnet18["layer1.0.bn1"].mutated_later  # followed by an in-place ReLU
    assert not resnet18["layer4"].mutated_later
    assert "avgpool" not in resnet18.names  # 1×1: no map


def test_default_layers_of_common_architectures() -> None:
    expected = {"vgg16": "features", "densenet121": "features", "mobilenet_v3_large": "features",
                "squeezenet1_1": "classifier.2", "convnext_tiny": "features"}
    for name, default in expected.items():
        model = getattr(torchvision.models, name)()
        assert xw.ModelBundle.wrap(model).layers.default == default, name


@pytest.mark.parametrize(("name", "message"), [
    ("layer5", "did you mean 'layer4'"),
    ("layer1.0.relu", "runs 2 times per forward pass"),
    ("avgpool", "single cell"),
    ("fc", "does not output a spatial map"),
    ("conv", "did you mean .conv1."),
    ("zzz", "candidate layers include"),
])
def test_resolution_errors_explain_themselves(resnet18: xw.LayerCatalog, name: str,
                                              message: str) -> None:
    with pytest.raises(xw.LayerError, match=message):
        resnet18.resolve(name)


def test_resolve_by_module_and_default() -> None:
    model = InplaceResNet()
    catalog = bundle(model).layers
    assert catalog.resolve(model.layer1, model) == "layer1"
    assert catalog.resolve(None) == catalog.default == "layer2"
    with pytest.raises(xw.LayerError, match="not part of this model"):
        catalog.resolve(torch.nn.Conv2d(1, 1, 1), model)
    with pytest.raises(xw.LayerError, match="by name"):
        catalog.resolve(3)  # type: ignore[arg-type]


def test_a_model_without_a_spatial_layer_has_no_layer_to_resolve() -> None:
    catalog = bundle(Mlp()).layers
    assert catalog.default is None and len(catalog) == 0
    with pytest.raises(xw.ModelError, match="no layer with a spatial output"):
        catalog.resolve(None)
    with pytest.raises(xw.ModelError, match="saliency, still apply"):
        xw.explain(bundle(Mlp()), torch.randn(1, 3, 16, 16), "grad_cam")


def test_the_pooled_layer_is_found_by_the_dry_run(resnet18: xw.LayerCatalog) -> None:
    assert resnet18.pooled == "layer4"
    vgg = xw.ModelBundle.wrap(torchvision.models.vgg11()).layers
    assert vgg.pooled is None


def test_a_model_that_does_not_return_logits_is_refused() -> None:
    class Pair(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    with pytest.raises(xw.ModelError, match="must return logits"):
        bundle(Pair()).layers  # noqa: B018


def test_listing_is_readable(resnet18: xw.LayerCatalog) -> None:
    text = repr(resnet18)
    assert "layer4 (Sequential, 512×7×7) <- default" in text
    assert len(resnet18) == len(resnet18.names) == len(list(resnet18))
