"""The batched x-feature maps equal the engine's contrastive excitation backprop run one
x-feature at a time, and a layer that a skip connection bypasses is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from xf_synthetic import PREPROCESSING, TinyCNN

import xai_widgets as xw
from xai_widgets.errors import LayerError
from xai_widgets.xfeatures.features import Embedding
from xai_widgets.xfeatures.maps import xfeature_maps
from xai_widgets.xfeatures.srae import SRAE
from xai_widgets.xfeatures.xnn import CombinedModel


class XFeaturesAsLogits(nn.Module):
    """The combined model with the x-features as its output, for ``xw.explain``."""

    def __init__(self, combined: CombinedModel) -> None:
        super().__init__()
        self.combined = combined

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combined.features(x)


def test_batched_maps_equal_one_c_eb_map_per_x_feature() -> None:
    torch.manual_seed(0)
    cnn = TinyCNN().eval()
    srae = SRAE(16, 3, (12, 6)).initialise(torch.Generator().manual_seed(1)).eval()
    with torch.no_grad():  # biases that keep the x-features alive on random images
        srae.encoder3.bias.fill_(0.5)
        srae.encoder2.bias.fill_(0.5)
    bundle = xw.ModelBundle(cnn, PREPROCESSING, ["a", "b", "c"])
    embedding = Embedding("fc", "input")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for layer in ("features.3", "features.5", "input"):
        maps, e = xfeature_maps(bundle, srae, embedding, x, layer)
        assert maps.shape[:2] == (2, 3)
        combined = xw.ModelBundle(XFeaturesAsLogits(CombinedModel(cnn, embedding, srae)),
                                  PREPROCESSING)
        with torch.inference_mode():
            torch.testing.assert_close(e, srae.encode(
                cnn.pool(cnn.features(x)).flatten(1)))
        if layer == "input":  # explain()'s c-EB maps a layer; the input map is (3, H, W)
            assert maps.shape == (2, 3, 32, 32)
            continue
        for k in range(3):
            one = xw.explain(combined, x, "contrastive_excitation_backprop", target=k,
                             layer=f"combined.cnn.{layer}")
            torch.testing.assert_close(maps[:, k], one.map, rtol=1e-4, atol=1e-7)
        # evidence for minus evidence against: each map sums to 0
        torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.zeros(2, 3), atol=1e-5, rtol=0)


class Skip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.a(x))
        return self.fc((torch.relu(self.b(a)) + a).mean(dim=(2, 3)))


def test_a_layer_bypassed_by_a_skip_connection_is_refused() -> None:
    torch.manual_seed(0)
    bundle = xw.ModelBundle(Skip().eval(), PREPROCESSING, ["a", "b"])
    srae = SRAE(4, 2, (8, 4)).initialise(torch.Generator().manual_seed(0)).eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(LayerError, match="skip connection"):
        xfeature_maps(bundle, srae, Embedding("fc", "input"), x, "b")
    maps, _ = xfeature_maps(bundle, srae, Embedding("fc", "input"), x, "a")
    assert maps.shape == (1, 2, 32, 32)
