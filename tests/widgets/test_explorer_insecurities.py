"""The Explorer's insecurities view without a browser: set controls as a person would and
compare what the canvas shows with direct ``deliberative`` calls; count the model's forward
passes with a hook (the view reuses the Explorer's traces)."""

from __future__ import annotations

import base64
import html
import io
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image
from test_explorer import photos
from tiny_models import Mlp, bundle

import xai_widgets as xw
from xai_widgets import deliberative as dl
from xai_widgets.deliberative.ambiguity import upsample
from xai_widgets.scope import model_lock
from xai_widgets.widgets.insecurity_panel import DIFFICULTY_MAP


@pytest.fixture
def app(small) -> xw.Explorer:
    return xw.Explorer(small, images=photos(), zoo=False, threaded=False)


@pytest.fixture
def forwards(small) -> Iterator[list[int]]:
    """The forward passes of the model from now on (one entry each)."""
    calls: list[int] = []
    handle = small.model.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


def direct(small: xw.ModelBundle, image: str = "photo0", **options) -> dl.InsecurityResult:
    return dl.insecurities(small, photos()[image], top_classes=5, **options)


def shown(app: xw.Explorer) -> np.ndarray:
    picture = app.view.composite()
    assert picture is not None
    return picture


def test_the_view_reuses_the_explorers_forward_pass(app, small, forwards) -> None:
    app.view_mode.value = "insecurities"
    app.classes.buttons[2].click()  # a class switch: the map's, free for the insecurities
    assert forwards == []
    panel = app.insecurity
    assert panel.analysis is not None
    assert panel.analysis.traces is app.session.traces("small", "photo0")
    expected = direct(small, layer="layer4")
    assert [label.rsplit(" · ", 1)[0] for label, _ in panel.pairs.options[1:]] == \
        [p.label for p in expected.pairs]
    assert panel.pairs.value == 0
    np.testing.assert_array_equal(panel.picture, expected.picture(0, 0.1))
    np.testing.assert_array_equal(shown(app), expected.picture(0, 0.1))
    pair, score = expected.pairs[0], expected.difficulty.score
    assert f"insecurity {pair.label} · score {pair.score:.3g}" in panel.caption_text
    assert f"entropy {score:.3f}" in panel.caption_text
    assert f"{score:.3f}" in panel.status.value and "layer layer4" in panel.status.value
    assert app.classes.buttons[2].button_style == "info"  # the map's class moved, nothing else
    assert app.insecurity.controls.layout.display == ""
    assert app._map_only[0].layout.display == "none" and app.caption.layout.display == "none"


def test_a_pair_the_area_the_display_and_the_difficulty_map(app, small) -> None:
    app.view_mode.value = "insecurities"
    panel = app.insecurity
    expected = direct(small, layer="layer4")
    last = len(expected.pairs) - 1
    panel.pairs.value = last  # a click on a pair
    np.testing.assert_array_equal(shown(app), expected.picture(last, 0.1))
    panel.area.value = 0.3
    np.testing.assert_array_equal(shown(app), expected.picture(last, 0.3))
    assert f"{expected.pairs[last].label}" in panel.caption_text and "top 30%" in \
        panel.caption_text
    panel.style.value = "original"
    np.testing.assert_array_equal(shown(app), expected.picture(last, 0.3, "original"))
    panel.pairs.value = DIFFICULTY_MAP
    np.testing.assert_array_equal(shown(app), expected.difficulty_picture())
    assert panel.caption_text.startswith("difficulty map: normalised entropy")
    app.view._move(30, 20)  # hover reads the map on view
    size = expected.display.shape[:2]
    value = float(upsample(expected.difficulty.map.double(), size)[20, 30])
    assert f"difficulty <b>{value:.4g}</b> at (30, 20)" == app.readout.value
    panel.difficulty.value = "cs"
    np.testing.assert_array_equal(shown(app), direct(small, difficulty="cs",
                                                     layer="layer4").difficulty_picture())


def test_image_model_and_layer_changes_follow(app, small, forwards) -> None:
    app.view_mode.value = "insecurities"
    app.image.value = "photo1"
    assert len(forwards) == 1  # the new image's one forward, shared with the heat map
    panel = app.insecurity
    assert panel.analysis is not None
    assert panel.analysis.traces is app.session.traces("small", "photo1")
    app.layer.value = "layer3"
    assert len(forwards) == 1
    twin = xw.ModelBundle(small.model, small.preprocessing, list(small.class_names), "twin")
    assert twin.layers.default == "layer4" and len(forwards) == 2  # the new bundle's dry run
    app.session.add_model("twin", twin)
    app.model.options = [*app.model.options, ("twin", "twin")]
    app.model.value = "twin"  # a new model: its default layer
    assert len(forwards) == 3
    assert panel.result is not None and panel.result.layer == "layer4"
    app.model.value = "small"
    app.layer.value = "layer3"
    calls = len(forwards)
    expected = direct(small, "photo1", layer="layer3")
    assert panel.result.layer == "layer3"
    assert [p.label for p in panel.result.pairs] == [p.label for p in expected.pairs]
    np.testing.assert_array_equal(shown(app), expected.picture(0, 0.1))
    assert len(forwards) == calls + 1  # the direct call's own


def test_the_layer_of_a_method_without_one_is_the_default(app, small) -> None:
    app.method.value = "saliency"
    assert app.layer.disabled  # the map takes no layer
    app.view_mode.value = "insecurities"
    assert not app.layer.disabled and app.layer.value == small.layers.default == "layer4"
    assert app.insecurity.result is not None and app.insecurity.result.layer == "layer4"
    app.layer.value = "layer2"  # chosen here, it is the insecurities' layer
    assert app.insecurity.result.layer == "layer2"
    app.view_mode.value = "map"
    assert app.layer.disabled and app.session.scene.explanation.method.name == "saliency"


def test_back_to_the_map_and_the_static_copy(app) -> None:
    scene = app.session.scene
    app.view_mode.value = "insecurities"
    panel = app.insecurity
    copy = app.static_html()
    assert html.escape(panel.caption_text) in copy
    encoded = copy.split("base64,", 1)[1].split('"', 1)[0]
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))
    np.testing.assert_array_equal(picture, panel.picture)
    app.view._down(8, 4)  # a drag hides nothing in this view
    app.view._move(30, 40)
    app.view._up(40, 50)
    assert app.session.scene.occlusion is None and "heat map view" in app.readout.value
    np.testing.assert_array_equal(shown(app), panel.picture)
    app.view_mode.value = "map"
    np.testing.assert_array_equal(app.view._heat, scene.frame.heat)
    np.testing.assert_array_equal(app.view._photo[..., :3], scene.frame.image)
    assert scene.frame.caption in app.static_html()
    assert app.insecurity.controls.layout.display == "none" and app.caption.layout.display == ""
    app.method.value = "layer_cam"  # a map change in map view draws the map
    np.testing.assert_array_equal(app.view._heat, app.session.scene.frame.heat)


def test_the_view_can_be_the_first_one(small) -> None:
    app = xw.Explorer(small, images=photos(), zoo=False, threaded=False,
                      view_mode="insecurities")
    assert app.insecurity.picture is not None
    np.testing.assert_array_equal(shown(app), app.insecurity.picture)
    with pytest.raises(xw.ParameterError, match=r"'map' .* or 'insecurities'"):
        xw.Explorer(small, images=photos(), zoo=False, view_mode="pairs")


def test_integrated_gradients_run_on_the_job_runner_and_can_be_cancelled(small) -> None:
    app = xw.Explorer(small, images=photos(), zoo=False, view_mode="insecurities")
    panel = app.insecurity
    before = panel.picture.copy()
    before_pair = (panel.result.pairs[0].a, panel.result.pairs[0].b)
    threads: set[str] = set()
    fractions: list[float] = []
    panel.progress.observe(lambda c: c["new"] > 0 and (
        threads.add(threading.current_thread().name), fractions.append(c["new"])),
        names="value")
    with model_lock(small.model):  # the job waits for the model: it cannot finish yet
        panel.attribution.value = "integrated_gradients"
        assert panel.busy and panel.working.layout.display == ""
        assert "integrated gradients (32 steps)" in panel.status.value
        panel.cancel_button.click()
        assert not panel.busy and panel.working.layout.display == "none"
        assert panel.attribution.value == "gradient"  # the controls show what is on view
        assert "cancelled" in panel.status.value
    assert panel.wait(30)
    assert panel.result is not None and panel.result.attribution == "gradient"
    np.testing.assert_array_equal(panel.picture, before)

    with model_lock(small.model):
        panel.attribution.value = "integrated_gradients"
        panel.normalise.value = False  # a newer request supersedes the first job
    assert panel.wait(60)
    expected = direct(small, layer="layer4", attribution="integrated_gradients", ig_steps=32,
                      normalise=False)
    assert panel.result.attribution == "integrated_gradients" and not panel.result.normalise
    torch.testing.assert_close(panel.result.class_maps, expected.class_maps)
    kept = before_pair  # the pair on view stays on view across attributions
    assert (panel.result.pairs[panel.pairs.value].a, panel.result.pairs[panel.pairs.value].b) \
        == kept
    np.testing.assert_array_equal(shown(app), expected.picture(kept, 0.1))
    assert threads == {"xai-widgets-jobs"} and 0 < min(fractions) < 1 == max(fractions)
    assert panel.working.layout.display == "none"

    with model_lock(small.model):
        panel.normalise.value = True
        (first,) = panel.runner.live()
        app.image.value = "photo1"  # a new image supersedes the job of the old one
        assert first.cancelled.is_set() and panel.busy
    assert panel.wait(60)
    expected = direct(small, "photo1", layer="layer4", attribution="integrated_gradients",
                      ig_steps=32)
    torch.testing.assert_close(panel.result.class_maps, expected.class_maps)
    assert panel.pairs.value == 0  # a new image: its most insecure pair
    np.testing.assert_array_equal(shown(app), expected.picture(0, 0.1))


def test_a_model_without_a_spatial_layer_says_why(small) -> None:
    app = xw.Explorer(bundle(Mlp()), images=photos(), zoo=False, threaded=False)
    app.view_mode.value = "insecurities"
    status = html.unescape(app.insecurity.status.value)
    assert "xai-status-error" in status and "no layer with a spatial output" in status
    assert app.insecurity.picture is None and app.insecurity.result is None
