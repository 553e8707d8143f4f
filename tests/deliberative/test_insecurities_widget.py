"""The Insecurities widget without a browser: set its controls as a person would and compare
the picture it shows with a direct ``deliberative.insecurities()`` call; integrated gradients
run on its job runner (cancel, supersede)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from tiny_models import PlainNet, bundle
from torch import nn

import xai_widgets as xw
from xai_widgets import deliberative as dl
from xai_widgets.scope import model_lock
from xai_widgets.widgets.insecurities import Insecurities
from xai_widgets.widgets.insecurity_panel import DIFFICULTY_MAP


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
    app = Insecurities(model, photo, top_classes=4, threaded=False)
    panel = app.panel
    expected = direct(model, photo)
    assert [label.rsplit(" · ", 1)[0] for label, _ in panel.pairs.options[1:]] == \
        [p.label for p in expected.pairs]
    assert panel.pairs.value == 0
    np.testing.assert_array_equal(app.picture, expected.picture(0, 0.1))
    assert app.view.composite() is not None
    np.testing.assert_array_equal(app.view.composite(), expected.picture(0, 0.1))
    assert expected.pairs[0].label in panel.caption_text

    panel.area.value = 0.3  # the area slider
    np.testing.assert_array_equal(app.picture, expected.picture(0, 0.3))
    last = len(expected.pairs) - 1
    panel.pairs.value = last  # a click on another pair
    np.testing.assert_array_equal(app.picture, expected.picture(last, 0.3))
    panel.style.value = "original"
    np.testing.assert_array_equal(app.picture, expected.picture(last, 0.3, "original"))
    panel.pairs.value = DIFFICULTY_MAP
    np.testing.assert_array_equal(app.picture, expected.difficulty_picture())

    panel.pairs.value = last
    panel.difficulty.value = "cs"
    cs = direct(model, photo, difficulty="cs")
    kept = cs.pair(expected.pairs[last].names)  # the pair on view stays on view
    assert panel.pairs.value == cs.pairs.index(kept)
    np.testing.assert_array_equal(app.picture, cs.picture(kept, 0.3, "original"))
    assert app.analysis.traces.forward_passes == 1  # a difficulty switch runs no forward
    panel.normalise.value = False
    raw = direct(model, photo, difficulty="cs", normalise=False)
    assert app.result is not None and [p.ranks for p in app.result.pairs] == \
        [p.ranks for p in raw.pairs]
    panel.attribution.value = "gradient_hessian"
    second = direct(model, photo, difficulty="cs", normalise=False,
                    attribution="gradient_hessian")
    torch.testing.assert_close(app.result.difficulty.map, second.difficulty.map)


def test_integrated_gradients_report_progress_and_hp_appears_with_a_predictor(model,
                                                                            photo) -> None:
    app = Insecurities(model, photo, top_classes=4, predictor=Head(), ig_steps=16,
                       threaded=False)
    panel = app.panel
    assert "hp" in panel.difficulty.options
    panel.difficulty.value = "hp"
    assert app.result is not None and app.result.difficulty.kind == "hp"
    fractions: list[float] = []
    panel.progress.observe(lambda c: fractions.append(c["new"]), names="value")
    panel.attribution.value = "integrated_gradients"
    assert fractions[-2:] == [0.5, 1.0] and panel.working.layout.display == "none"
    expected = direct(model, photo, difficulty=panel.predictor,
                      attribution="integrated_gradients", ig_steps=16)
    torch.testing.assert_close(app.result.class_maps, expected.class_maps)
    assert "data:image/png;base64," in app.static_html()
    assert panel.caption_text in app.static_html() and "integrated gradients" in \
        panel.caption_text


def test_integrated_gradients_run_as_a_job_that_a_newer_choice_supersedes(model,
                                                                         photo) -> None:
    app = Insecurities(model, photo, top_classes=4, ig_steps=16)
    panel = app.panel
    before = app.picture.copy()
    threads: set[str] = set()
    panel.progress.observe(lambda c: c["new"] > 0 and threads.add(
        threading.current_thread().name), names="value")
    with model_lock(model.model):  # the job waits for the model: it cannot finish yet
        panel.attribution.value = "integrated_gradients"
        assert panel.busy and panel.working.layout.display == ""
        panel.cancel_button.click()
        assert not panel.busy and panel.attribution.value == "gradient"
        assert "cancelled" in panel.status.value
        panel.attribution.value = "integrated_gradients"
        panel.difficulty.value = "cs"  # supersedes the entropy job
    assert app.wait(30)
    assert app.result is not None and app.result.difficulty.kind == "cs"
    expected = direct(model, photo, difficulty="cs", attribution="integrated_gradients",
                      ig_steps=16)
    torch.testing.assert_close(app.result.difficulty.map, expected.difficulty.map)
    assert threads == {"xai-widgets-jobs"} and not np.array_equal(app.picture, before)


def test_an_error_keeps_the_last_picture_and_says_why(model, photo) -> None:
    class Broken(Head):
        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(features), 3)

    app = Insecurities(model, photo, top_classes=4, predictor=Broken())
    before = app.picture.copy()
    app.panel.difficulty.value = "hp"
    status = app.panel.status.value
    assert "pre-sigmoid" in status and "xai-status-error" in status
    np.testing.assert_array_equal(app.picture, before)
    app.panel.status.value = ""
    app.panel.attribution.value = "integrated_gradients"  # fails in its job, says so too
    assert app.wait(30)
    status = app.panel.status.value
    assert "pre-sigmoid" in status and "xai-status-error" in status
    assert app.panel.working.layout.display == "none"
    np.testing.assert_array_equal(app.picture, before)


def test_bad_choices_are_refused_clearly(model, photo) -> None:
    with pytest.raises(xw.ParameterError, match="'hp' needs predictor"):
        Insecurities(model, photo, difficulty="hp")
    with pytest.raises(xw.ParameterError, match="attribution one of"):
        Insecurities(model, photo, attribution="saliency")
    with pytest.raises(xw.ParameterError, match=r"ig_steps .* integer >= 1"):
        Insecurities(model, photo, ig_steps=0)
    with pytest.raises(xw.ParameterError, match=r"area .* \(0, 1\]"):
        Insecurities(model, photo, area=1.5)
