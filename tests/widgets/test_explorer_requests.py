"""What the Explorer shows while a job computes, and the layer policy in the Explorer
(defects seen in a real browser, each reproduced here without one)."""

from __future__ import annotations

import html

import numpy as np
from probe_method import CALLS
from support import wait_until

import xai_widgets as xw
from xai_widgets.widgets.explorer import CSS


def photos() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {f"photo{i}": rng.integers(0, 255, (80, 100, 3), dtype=np.uint8) for i in range(2)}


def threaded(small) -> xw.Explorer:
    return xw.Explorer(small, images=photos(), zoo=False, threaded=True)


def test_a_change_during_a_job_keeps_the_method_being_computed(small, probes) -> None:
    _, slow = probes
    app = threaded(small)
    app.session.select(method=slow.name, params={"steps": 30, "pause": 0.05})
    wait_until(lambda: len(CALLS) == 1 and app.progress.layout.display == "")
    app.layer.value = "layer3"  # another control while the job runs
    assert app.method.value == slow.name  # not reverted to the map on view
    assert app.session.requested.method == slow.name
    assert app.session.requested.layer == "layer3"
    wait_until(lambda: app.session.scene.selection.method == slow.name, timeout=30)
    assert app.session.scene.selection.layer == "layer3"
    assert CALLS[-1]["steps"] == 30  # the parameters went along too


def test_the_description_follows_the_method_being_computed(small, probes) -> None:
    _, slow = probes
    app = threaded(small)
    assert "Grad-CAM" in app.method_help.value or "gradient" in app.method_help.value.lower()
    app.session.select(method=slow.name, params={"steps": 20, "pause": 0.05})
    wait_until(lambda: "test method" in app.method_help.value)
    assert app.session.scene.selection.method == "grad_cam"  # still on view meanwhile
    app.session.cancel()


def test_the_progress_bar_goes_away_when_its_job_is_superseded(small, probes) -> None:
    _, slow = probes
    app = threaded(small)
    app.session.select(method=slow.name, params={"steps": 50, "pause": 0.05})
    wait_until(lambda: app.progress.layout.display == "")
    assert app.cancel.layout.display == ""
    app.method.value = "saliency"  # an instant method supersedes the job
    assert app.session.scene.selection.method == "saliency"
    assert app.progress.layout.display == "none"
    assert app.cancel.layout.display == "none"
    assert app.method.value == "saliency"


def test_a_cancelled_job_leaves_the_controls_on_what_is_shown(small, probes) -> None:
    _, slow = probes
    app = threaded(small)
    app.session.select(method=slow.name, params={"steps": 50, "pause": 0.05})
    wait_until(lambda: app.progress.layout.display == "")
    app.cancel.click()
    assert app.session.requested == app.session.selection
    assert app.progress.layout.display == "none"
    app.layer.value = "layer2"  # applies to what is on view (Grad-CAM), not to the probe
    assert app.session.scene.selection.method == "grad_cam"
    assert app.session.scene.selection.layer == "layer2"


def test_a_long_error_wraps_in_the_status_line(small) -> None:
    app = xw.Explorer(small, images=photos(), zoo=False, threaded=False)
    app.method.value = "cam"
    app.layer.value = "layer2"  # CAM is defined at the pooled layer only: refused, shown
    status = html.unescape(app.status.value)
    assert "only at the layer that feeds the global pooling" in status
    assert app.layer.value == "layer4"  # the control shows what is on view
    assert "xai-status" in app.status._dom_classes
    assert ".xai-status { white-space: normal; overflow-wrap: anywhere" in CSS


def test_cam_in_the_explorer_uses_its_own_layer_and_a_layer_given_to_it(small) -> None:
    app = xw.Explorer(small, images=photos(), zoo=False, threaded=False)
    app.layer.value = "layer3"
    app.method.value = "cam"  # from Grad-CAM at layer3: CAM finds the pooled layer itself
    assert app.session.scene.explanation.layer == "layer4"
    assert app.layer.value == "layer4"
    assert not app.layer.disabled  # CAM takes a layer (only that one is valid)
    app.method.value = "saliency"
    assert app.layer.disabled


def test_the_layer_menu_offers_blocks_and_all_layers_on_request(embedded) -> None:
    app = xw.Explorer(embedded, images=photos(), zoo=False, threaded=False)
    catalog = embedded.layers
    shown = [name for _, name in app.layer.options]
    assert len(catalog) > 100 and len(shown) < 40
    assert catalog.default in shown and catalog.pooled in shown
    kinds = {catalog[name].kind for name in shown}
    assert not kinds & {"Identity", "Dropout", "AdaptiveAvgPool2d"}
    assert all(len(label) <= 40 for label, _ in app.layer.options)
    app.all_layers.value = True
    assert [name for _, name in app.layer.options] == catalog.names
    app.layer.value = catalog.names[5]
    app.all_layers.value = False
    assert app.layer.value == catalog.names[5]  # the layer on view stays offered
    assert catalog.names[5] in [name for _, name in app.layer.options]


def test_a_choice_made_while_the_worker_syncs_the_controls_is_kept(small) -> None:
    import threading

    app = xw.Explorer(small, images=photos(), zoo=False, threaded=False)
    entered, release = threading.Event(), threading.Event()

    def worker_syncing() -> None:  # what the job thread does while it shows a scene
        app._syncing = True
        entered.set()
        release.wait(5)
        app._syncing = False

    worker = threading.Thread(target=worker_syncing)
    worker.start()
    entered.wait(5)
    app.method.value = "saliency"  # a person's choice, on another thread meanwhile
    release.set()
    worker.join(5)
    assert app.session.scene.selection.method == "saliency"


def test_feature_inversion_offers_the_layers_of_the_model_on_view(small) -> None:
    from tiny_models import PlainNet, bundle

    plain = bundle(PlainNet(), size=32)
    plain.name = "plain"
    app = xw.Explorer([small, plain], images=photos(), zoo=False, threaded=False)
    app.session.select(method="feature_inversion", params={"iterations": 2,
                                                           "step1_iterations": 1})
    menu = app._param_controls["mask_layer"]
    values = [value for _, value in menu.options]
    assert values[0] == "same" and "layer3" in values and "layer4" in values
    assert set(values[1:]) <= set(small.layers.names)
    menu.value = "layer3"
    assert dict(app.session.requested.params)["mask_layer"] == "layer3"
    app.model.value = "plain"  # another model: its own layers, the old choice is gone
    values = [value for _, value in app._param_controls["mask_layer"].options]
    assert values[0] == "same" and "layer3" not in values
    assert set(values[1:]) <= set(plain.layers.names) and len(values) > 1
    assert app.session.requested.model == "plain"  # not refused for the old model's layer
    assert dict(app.session.requested.params)["mask_layer"] == "same"
    assert app._param_controls["mask_layer"].value == "same"
