"""The Insecurities widget without a browser: set its controls as a person would and compare
the picture it shows with a direct ``deliberative.insecurities()`` call."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import PlainNet, bundle
from torch import nn

import xai_widgets as xw
from xai_widgets import deliberative as dl
from xai_widgets.widgets.insecurities import DIFFICULTY_MAP, Insecurities


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3)).relu())[:, 0]


@pytest.fixture
def model() -> xw.ModelBundle:
    torch.manual_seed(0)
    return bundle(PlainNet(6), 16, classes=6)


@pytest.fixture
def photo() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)


def direct(model: xw.ModelBundle, photo: np.ndarray, **options) -> dl.InsecurityResult:
    return dl.insecurities(model, photo, top_classes=4, **options)


def test_controls_against_direct_calls(model, photo) -> None:
    app = Insecurities(model, photo, top_classes=4)
    expected = direct(model, photo)
    assert [label.rsplit(" · ", 1)[0] for label, _ in app.pairs.options[1:]] == \
        [p.label for p in expected.pairs]
    assert app.pairs.value == 0
    np.testing.assert_array_equal(app.picture, expected.picture(0, 0.1))
    assert app.view.composite() is not None
    np.testing.assert_array_equal(app.view.composite(), expected.picture(0, 0.1))

    app.area.value = 0.3  # the area slider
    np.testing.assert_array_equal(app.picture, expected.picture(0, 0.3))
    app.pairs.value = len(expected.pairs) - 1  # a click on another pair
    np.testing.assert_array_equal(app.picture, expected.picture(len(expected.pairs) - 1, 0.3))
    app.style.value = "original"
    np.testing.assert_array_equal(app.picture,
                                  expected.picture(len(expected.pairs) - 1, 0.3, "original"))
    app.pairs.value = DIFFICULTY_MAP
    np.testing.assert_array_equal(app.picture, expected.difficulty_picture())

    app.pairs.value = 0
    app.difficulty.value = "cs"
    cs = direct(model, photo, difficulty="cs")
    np.testing.assert_array_equal(app.picture, cs.picture(0, 0.3, "original"))
    assert app.analysis.traces.forward_passes == 1  # a difficulty switch runs no forward
    app.normalise.value = False
    raw = direct(model, photo, difficulty="cs", normalise=False)
    assert app.result is not None and [p.ranks for p in app.result.pairs] == \
        [p.ranks for p in raw.pairs]
    app.attribution.value = "gradient_hessian"
    second = direct(model, photo, difficulty="cs", normalise=False,
                    attribution="gradient_hessian")
    torch.testing.assert_close(app.result.difficulty.map, second.difficulty.map)


def test_integrated_gradients_report_progress_and_hp_appears_with_a_predictor(model,
                                                                            photo) -> None:
    app = Insecurities(model, photo, top_classes=4, predictor=Head(), ig_steps=4)
    assert "hp" in app.difficulty.options
    app.difficulty.value = "hp"
    assert app.result is not None and app.result.difficulty.kind == "hp"
    app.attribution.value = "integrated_gradients"
    assert app.progress.value == 1.0 and app.progress.layout.visibility == "hidden"
    expected = direct(model, photo, difficulty=app.predictor,
                      attribution="integrated_gradients", ig_steps=4)
    torch.testing.assert_close(app.result.class_maps, expected.class_maps)
    assert "data:image/png;base64," in app.static_html()


def test_an_error_keeps_the_last_picture_and_says_why(model, photo) -> None:
    class Broken(Head):
        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(features), 3)

    app = Insecurities(model, photo, top_classes=4, predictor=Broken())
    before = app.picture.copy()
    app.difficulty.value = "hp"
    assert "pre-sigmoid" in app.status.value and "xai-status-error" in app.status.value
    np.testing.assert_array_equal(app.picture, before)


def test_bad_choices_are_refused_clearly(model, photo) -> None:
    with pytest.raises(xw.ParameterError, match="'hp' needs predictor"):
        Insecurities(model, photo, difficulty="hp")
    with pytest.raises(xw.ParameterError, match="attribution one of"):
        Insecurities(model, photo, attribution="saliency")
