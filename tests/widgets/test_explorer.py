"""The Explorer without a browser: set controls as a person would, and compare what was handed
to the canvas with a direct ``explain()`` + render under the same settings."""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone

import numpy as np
import pytest
import torch
from PIL import Image
from probe_method import CALLS

import xai_widgets as xw
from xai_widgets.widgets import canvas as canvas_module


def photos() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {f"photo{i}": rng.integers(0, 255, (80, 100, 3), dtype=np.uint8) for i in range(2)}


@pytest.fixture
def app(small) -> xw.Explorer:
    return xw.Explorer(small, images=photos(), zoo=False, threaded=False)


def expect_frame(app: xw.Explorer, image: str, **explain_args) -> None:
    """The canvas shows exactly what explain() + render give for the same choices."""
    bundle = app.session.bundle(app.session.selection.model)
    direct = xw.explain(bundle, app.session.images[image], **explain_args)
    frame = direct.render(**vars(app.session.settings))[0]
    np.testing.assert_array_equal(app.view._heat, frame.heat)
    np.testing.assert_array_equal(app.view._photo[..., :3], frame.image)
    assert app.caption.value == f"<b>{frame.caption}</b>"


def test_first_frame(app) -> None:
    expect_frame(app, "photo0", method="grad_cam")
    assert app.view.frames_sent == 1
    assert app.layer.value == "layer4" and "★ default" in app.layer.label


def test_method_layer_and_class_controls(app) -> None:
    app.method.value = "layer_cam"
    expect_frame(app, "photo0", method="layer_cam")
    app.layer.value = "layer2"
    expect_frame(app, "photo0", method="layer_cam", layer="layer2")
    target = app.classes._indices[2]
    app.classes.buttons[2].click()
    expect_frame(app, "photo0", method="layer_cam", layer="layer2", target=target)
    assert app.classes.buttons[2].button_style == "info"
    app.classes.search.value = "class9"
    expect_frame(app, "photo0", method="layer_cam", layer="layer2", target=9)
    shown = [b.description for b, row in zip(app.classes.buttons, app.classes.rows,
                                              strict=True) if row.layout.display != "none"]
    assert "class9" in shown  # the explained class is listed even outside the top 5
    app.method.value = "guided_backprop"
    assert app.layer.disabled and not app.display_controls.channels.disabled
    expect_frame(app, "photo0", method="guided_backprop", target=9)


def test_image_and_model_controls(app, small) -> None:
    twin = xw.ModelBundle(small.model, small.preprocessing, list(small.class_names), "twin")
    app.session.add_model("twin", twin)
    app.model.options = [*app.model.options, ("twin", "twin")]
    app.image.value = "photo1"
    expect_frame(app, "photo1", method="grad_cam")
    app.model.value = "twin"
    expect_frame(app, "photo1", method="grad_cam")
    assert app.session.selection.model == "twin"


def test_parameter_controls_are_generated_from_the_spec(probes, app) -> None:
    quick, _ = probes
    app.method.value = quick.name
    controls = app._param_controls
    kinds = {name: type(control).__name__ for name, control in controls.items()}
    assert kinds == {"scale": "FloatSlider", "steps": "IntSlider", "flip": "Checkbox",
                     "mode": "Dropdown", "pause": "FloatSlider"}
    controls["scale"].value = 4.0
    controls["mode"].value = "ramp"
    controls["flip"].value = True
    assert CALLS[-1] == {"scale": 4.0, "steps": 0, "flip": True, "mode": "ramp", "pause": 0.0}
    np.testing.assert_array_equal(app.session.scene.explanation.map[0, 0],
                                  -(4.0 + torch.arange(4.0)))


def test_display_controls_rerender_without_a_method(probes, app) -> None:
    quick, _ = probes
    app.method.value = quick.name
    app._param_controls["mode"].value = "ramp"
    calls = len(CALLS)
    controls = app.display_controls
    for control, value in ((controls.opacity, 0.8), (controls.cmap, "viridis"),
                           (controls.polarity, "signed"), (controls.clip_percentile, 95.0)):
        control.value = value
        frame = app.session.scene.explanation.render(**vars(app.session.settings))[0]
        np.testing.assert_array_equal(app.view._heat, frame.heat)
    assert len(CALLS) == calls
    assert app.session.settings.cmap == "viridis" and app.session.settings.opacity == 0.8


def test_gradient_views(app) -> None:
    app.method.value = "guided_backprop"
    for view in ("colour", "gray", "positive", "negative"):
        app.display_controls.gradient_view.value = view
        expect_frame(app, "photo0", method="guided_backprop")
    controls = app.display_controls
    controls.gradient_view.value = controls.gradient_view.options[0][1]  # "heat map"
    controls.cmap.value = controls.cmap.options[0][1]  # "auto"
    assert app.session.settings.gradient_view is None and app.session.settings.cmap is None
    expect_frame(app, "photo0", method="guided_backprop")
    assert controls.cmap.label == "auto" and controls.gradient_view.label == "heat map"


def test_a_display_change_sends_only_the_heat_layer(app, monkeypatch) -> None:
    sent: list[object] = []
    original = canvas_module.put_rgba
    monkeypatch.setattr(canvas_module, "put_rgba",
                        lambda canvas, rgba: (sent.append(canvas), original(canvas, rgba)))
    app.display_controls.opacity.value = 0.3
    assert sent == [app.view.canvas[canvas_module.HEAT]]
    sent.clear()
    app.image.value = "photo1"
    assert sent == [app.view.canvas[canvas_module.PHOTO], app.view.canvas[canvas_module.HEAT]]
    sent.clear()
    app.view.replay()  # a client connected: both layers again
    assert sent == [app.view.canvas[canvas_module.PHOTO], app.view.canvas[canvas_module.HEAT]]


def test_mouse_hover_click_and_occlusion(app, small) -> None:
    scene = app.session.scene
    app.view._move(30, 20)
    assert f"{float(scene.frame.values[20, 30]):.4g}" in app.readout.value
    app.view._down(12, 12)
    app.view._up(13, 12)  # a click, not a drag
    assert "pinned (13, 12)" in app.readout.value
    app.view._down(8, 4)
    app.view._move(30, 40)
    app.view._up(40, 50)
    occlusion = app.session.scene.occlusion
    assert occlusion is not None and occlusion.box == (8, 4, 40, 50)
    np.testing.assert_array_equal(app.view._photo[..., :3], occlusion.image)
    assert "▼" in app.classes.bars[0].value or "▲" in app.classes.bars[0].value
    inputs = app.session.prepared("small", "photo0").inputs.clone()
    inputs[..., 4:50, 8:40] = 0
    with torch.no_grad():
        top = int(small.model(inputs).softmax(1)[0].argmax())
    assert top in occlusion.probabilities or occlusion.probabilities
    app.reset.click()
    assert app.session.scene.occlusion is None
    np.testing.assert_array_equal(app.view._photo[..., :3], scene.frame.image)


def test_upload(app) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((50, 70, 3), 200, np.uint8)).save(buffer, format="PNG")
    app.upload.value = ({"name": "mine.png", "content": memoryview(buffer.getvalue()),
                         "type": "image/png", "size": len(buffer.getvalue()),
                         "last_modified": datetime.now(timezone.utc)},)
    assert app.image.value == "mine.png" and app.session.selection.image == "mine.png"
    frames = app.view.frames_sent
    app.upload.value = ({"name": "bad.png", "content": memoryview(b"not a picture"),
                         "type": "image/png", "size": 13,
                         "last_modified": datetime.now(timezone.utc)},)
    assert "upload refused" in app.status.value and "cannot be decoded" in app.status.value
    assert app.image.value == "mine.png" and app.view.frames_sent == frames


def test_refused_choices_show_in_the_status_line_and_revert(app) -> None:
    frames = app.view.frames_sent
    app.method.value = "cam"  # works: resnet18 has a GAP head
    assert app.view.frames_sent == frames + 1
    app.session.models["broken"] = None  # a zoo name that does not exist
    app.model.options = [*app.model.options, ("broken", "broken")]
    app.model.value = "broken"
    status = html.unescape(app.status.value)
    assert "error" in status and "unknown model 'broken'" in status
    assert app.model.value == "small"  # the control shows what is really on view


def test_static_copy_for_notebooks_viewed_without_a_kernel(app) -> None:
    copy = app.static_html()
    assert copy.startswith('<div class="xai-static"><img src="data:image/png;base64,')
    encoded = copy.split("base64,", 1)[1].split('"', 1)[0]
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))
    np.testing.assert_array_equal(picture, app.view.composite())
    assert app.session.scene.frame.caption in copy
    assert ".xai-static { display: none; }" in app.widget.children[0].value  # live: hidden


def test_compare_grid(small, tmp_path) -> None:
    image = photos()["photo0"]
    grid = xw.Compare(small, image, methods=["grad_cam", "saliency"], classes="top3")
    assert [len(row) for row in grid.grid] == [3, 3]
    targets = [e.targets[0] for e in grid.grid[0]]
    assert targets == [i for i, _, _ in grid.top[:3]]
    direct = xw.explain(small, image, "saliency", target=targets[1])
    torch.testing.assert_close(grid.grid[1][1].map, direct.map)
    assert grid.save(tmp_path / "grid.png").stat().st_size > 5000
    by_layer = xw.Compare(small, image, methods=["grad_cam"], layers=["layer2", "layer4"])
    assert [e.layer for e in by_layer.grid[0]] == ["layer2", "layer4"]
    by_model = xw.Compare([small, small], image, methods=["cam"])
    assert len(by_model.columns) == 2
    assert grid._repr_png_()[:4] == b"\x89PNG"


def test_compare_methods_with_their_own_parameters(small) -> None:
    image = photos()["photo0"]
    inversion = ("feature_inversion", {"iterations": 4, "step1_iterations": 2})
    grid = xw.Compare(small, image, methods=["cam", inversion, "guided_backprop"],
                      classes="top2")
    assert grid.methods == ["cam", "feature_inversion", "guided_backprop"]
    for column, target in enumerate(i for i, _, _ in grid.top[:2]):
        direct = xw.explain(small, image, "feature_inversion", target=target, iterations=4,
                            step1_iterations=2)
        torch.testing.assert_close(grid.grid[1][column].map, direct.map)
        assert grid.grid[1][column].params["iterations"] == 4
    with pytest.raises(xw.ParameterError, match="iterations"):
        xw.Compare(small, image, methods=[("feature_inversion", {"iterations": 0})])
