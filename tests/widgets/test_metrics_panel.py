"""The Explorer's metrics panel and the session's metric jobs: the curves on view are those of
the map on view, cached per map, recomputed only when the ranking changes, cancelled with it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support import wait_until

import xai_widgets as xw
from xai_widgets import metrics
from xai_widgets.session import Measured, Session
from xai_widgets.widgets.metrics_panel import curve_summary, sanity_summary


def photos() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {f"photo{i}": rng.integers(0, 255, (80, 100, 3), dtype=np.uint8) for i in range(2)}


class ForwardCounter:
    """Counts the images the model sees (the root module's forward calls, per row)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.images = 0
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, _module, args, _output) -> None:
        self.images += len(args[0])

    def remove(self) -> None:
        self._handle.remove()


@pytest.fixture
def counter(small):
    counter = ForwardCounter(small.model)
    yield counter
    counter.remove()


def record(session: Session) -> list[Measured]:
    seen: list[Measured] = []
    session.subscribe(lambda event, payload: seen.append(payload) if event == "metrics" else None)
    return seen


def test_curves_are_those_of_the_shown_map(small, counter) -> None:
    session = Session({"small": small}, photos(), threaded=False)
    scene = session.select()
    seen = record(session)
    curves = session.measure(True, steps=14)
    inputs = session.prepared("small", "photo0").inputs
    direct = metrics.deletion_insertion(scene.explanation, inputs,
                                        pixels_per_step=math.ceil(64 * 64 / 14))
    assert curves is not None and curves.areas() == direct.areas()
    assert curves.deletion.scores.shape == (1, 15)
    assert [(m.kind, m.selection) for m in seen] == [("curves", scene.selection)]

    other = (scene.target + 1) % 10
    second = session.select(target=other)  # a new map is measured at once
    assert seen[-1].selection == second.selection and seen[-1].result.targets == (other,)
    assert seen[-1].result.areas() != curves.areas()

    counter.images = 0
    session.select(target=None)  # back to the first map: cached, no pass at all
    session.display(cmap="magma", opacity=0.3)  # same ranking: nothing to measure
    assert counter.images == 0
    assert seen[-1].result is curves

    session.display(polarity="absolute")  # another ranking of the pixels: measured again
    assert counter.images == 1 + 2 * 14
    absolute = metrics.deletion_insertion(scene.explanation, inputs, polarity="absolute",
                                          pixels_per_step=math.ceil(64 * 64 / 14))
    assert seen[-1].result.areas() == absolute.areas()

    count = len(seen)
    session.measure(False)
    session.select(target=5)
    assert len(seen) == count  # off: nothing measured


def test_steps_must_be_offered(small) -> None:
    session = Session({"small": small}, photos(), threaded=False)
    session.select()
    statuses: list = []
    session.subscribe(lambda e, p: statuses.append(p) if e == "status" else None)
    assert session.measure(True, steps=13) is None
    assert statuses[-1][1] == "error" and "14, 28" in statuses[-1][0]
    assert session.curve_steps == 28


def test_a_new_map_cancels_the_running_measurement(small) -> None:
    session = Session({"small": small}, photos(), threaded=True)
    session.select()
    seen = record(session)
    fractions: list = []
    session.subscribe(lambda e, p: fractions.append(p) if e == "metrics-progress" else None)
    session.measure(True, steps=224)  # 449 inputs, in chunks: long enough to interrupt
    wait_until(lambda: any(f not in (None, 0.0) for _, f in fractions))
    latest = session.select(target=2)
    wait_until(lambda: seen and seen[-1].selection == latest.selection, timeout=60)
    wait_until(lambda: not session.jobs.busy())
    assert [m.selection for m in seen] == [latest.selection]  # the first map's never came
    assert fractions[-1] == ("curves", None)  # the panel's progress bar is hidden


def test_sanity_check_of_the_shown_map(small) -> None:
    session = Session({"small": small}, photos(), threaded=False)
    scene = session.select(method="saliency")
    seen = record(session)
    result = session.sanity(stages=3)
    inputs = session.prepared("small", "photo0").inputs
    direct = metrics.sanity_check(scene.explanation, inputs, stages=3)
    assert result is not None and result.stages == direct.stages
    for name, values in direct.similarity.items():
        torch.testing.assert_close(result.similarity[name], values)
    assert seen[-1].kind == "sanity" and session.sanity(stages=3) is result  # cached


def test_the_panel_in_the_explorer(small) -> None:
    app = xw.Explorer(small, images=photos(), zoo=False, threaded=False)
    panel = app.metrics
    assert panel.curve_plot.layout.display == "none"
    panel.steps.value = 14
    panel.curves.value = True  # as a click on the toggle does
    curves = app.session.measure(True, 14)
    assert curves is not None
    assert panel.curve_plot.layout.display == ""
    assert bytes(panel.curve_plot.value).startswith(b"\x89PNG")
    assert panel.curve_text.value == curve_summary(curves)
    deletion, insertion = curves.areas()["deletion"][0], curves.areas()["insertion"][0]
    assert f"{deletion:.3f}" in panel.curve_text.value
    assert f"{insertion:.3f}" in panel.curve_text.value

    second = app.session.scene.top[1][0]
    app.classes.buttons[1].click()  # another class: the panel follows
    assert app.session.scene.target == second
    now = app.session.measure(True, 14)
    assert now is not None and now.targets == (second,)
    assert panel.curve_text.value == curve_summary(now)

    panel.sanity.click()
    sanity = app.session.sanity()
    assert sanity is not None and panel.sanity_text.value == sanity_summary(sanity)
    assert panel.sanity_plot.layout.display == ""
    app.method.value = "saliency"  # a new map: its sanity check is not the one on view
    assert panel.sanity_plot.layout.display == "none" and panel.sanity_text.value == ""

    panel.curves.value = False
    app.classes.buttons[2].click()
    assert panel.curve_plot.layout.display == "none"


def test_summaries_say_what_the_numbers_mean() -> None:
    fractions = torch.linspace(0, 1, 3)
    curves = metrics.DeletionInsertion(
        {"deletion": metrics.Curve("deletion", fractions, torch.tensor([[1.0, 0.0, 0.0]]),
                                   "zeros", "probability"),
         "insertion": metrics.Curve("insertion", fractions, torch.tensor([[0.0, 1.0, 1.0]]),
                                    "blur", "probability")},
        (0,), ("cat",), 10, 5)
    text = curve_summary(curves)
    assert "deletion area <b>0.250</b>" in text and "insertion area <b>0.750</b>" in text
    assert "2 steps per curve, not RISE's 224" in text
    assert "deletion to zeros, insertion from blur" in text
    sanity = metrics.Sanity("saliency", (0,), None, ["fc", "layer4"], [["fc"], ["layer4"]],
                            {"spearman": torch.tensor([[0.9], [0.1]])},
                            [torch.zeros(1, 2, 2)] * 3, xw.RenderSettings())
    text = sanity_summary(sanity)
    assert "after randomising 2 stages" in text and "spearman <b>0.10</b>" in text


def test_an_optimisation_shows_its_map_and_loss_as_it_goes(small) -> None:
    app = xw.Explorer(small, images=photos(), zoo=False, threaded=True)
    session = app.session
    session.PREVIEW_INTERVAL = 0.0  # every report
    previews: list = []
    session.subscribe(lambda e, p: previews.append(p) if e == "preview" else None)
    params = {"iterations": 20, "step1_iterations": 5, "report_every": 5}
    session.select(method="feature_inversion", params=params)
    wait_until(lambda: session.scene is not None and
               session.scene.selection.method == "feature_inversion", timeout=60)
    wait_until(lambda: not session.jobs.busy())  # the app has drawn the final scene
    final = session.scene.explanation
    assert [p.frame.caption.rsplit(" · ", 1)[1] for p in previews] == \
        ["25% done", "50% done", "75% done", "100% done"]
    for done, preview in zip((5, 10, 15, 20), previews, strict=True):
        assert preview.explanation.map.shape == final.map.shape
        torch.testing.assert_close(preview.explanation.extras["loss"],
                                   final.extras["loss"][:, :done].cpu())
    assert app.loss_plot.layout.display == ""  # the final loss curve stays on view
    assert bytes(app.loss_plot.value).startswith(b"\x89PNG")
    app.method.value = "grad_cam"
    assert app.loss_plot.layout.display == "none"
