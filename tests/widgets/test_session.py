"""The pure-Python session: selection rules, caches, jobs (supersede, cancel, errors),
robustness under rapid changes."""

from __future__ import annotations

import gc
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from probe_method import CALLS
from support import wait_until

import xai_widgets as xw
from xai_widgets.session import LRU, Session


def photos() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {f"photo{i}": rng.integers(0, 255, (90, 120, 3), dtype=np.uint8) for i in range(3)}


def test_scene_equals_explain_and_render(small) -> None:
    session = Session({"small": small}, photos(), threaded=False)
    scene = session.select(method="layer_cam", layer="layer3", target=4)
    direct = xw.explain(small, photos()["photo0"], "layer_cam", target=4, layer="layer3")
    torch.testing.assert_close(scene.explanation.map, direct.map)
    expected = direct.render(**vars(session.settings))[0]
    np.testing.assert_array_equal(scene.frame.heat, expected.heat)
    assert scene.frame.caption == expected.caption


def test_switches_reuse_the_trace(small) -> None:
    session = Session({"small": small}, photos(), threaded=False)
    session.select(method="grad_cam", layer="layer3")
    traces = session.traces("small", "photo0")
    for changes in ({"method": "grad_cam_pp"}, {"method": "layer_cam"}, {"target": 7},
                    {"layer": "layer2"}, {"method": "saliency"}, {"method": "grad_cam"}):
        session.select(**changes)
    assert session.traces("small", "photo0") is traces
    assert traces.forward_passes == 1


def test_selection_rules(small) -> None:
    other = xw.ModelBundle(small.model, small.preprocessing, list(small.class_names), "twin")
    session = Session({"small": small, "twin": other}, photos(), threaded=False)
    session.select(target=6, layer="layer2", method="grad_cam")
    assert session.select(model="twin").selection.target == 6  # same class names: kept
    assert session.selection.layer == "layer4"  # a new model starts at its default layer
    assert session.select(image="photo1").selection.target is None  # new image: prediction
    session.select(method="saliency")
    assert session.settings.clip_percentile == 99.0  # the method's own rendering


def test_refused_changes_keep_the_last_scene(small) -> None:
    session = Session({"small": small}, photos(), threaded=False)
    statuses: list[tuple[str, str]] = []
    session.subscribe(lambda event, payload: statuses.append(payload) if event == "status"
                      else None)
    good = session.select()
    for changes, message in (({"layer": "layer9"}, "did you mean"),
                             ({"target": 99}, "out of range"),
                             ({"method": "nope"}, "unknown method"),
                             ({"image": "nope"}, "unknown image"),
                             ({"model": "nope"}, "unknown model"),
                             ({"color": 1}, "cannot change color")):
        assert session.select(**changes) is None
        assert message in statuses[-1][0] and statuses[-1][1] == "error"
        assert session.scene is good
    assert session.display(polarity="sideways") is None
    assert "unknown polarity" in statuses[-1][0]
    assert session.settings.polarity == "positive"


def test_display_changes_run_no_method(small, probes) -> None:
    quick, _ = probes
    session = Session({"small": small}, photos(), threaded=False)
    session.select(method=quick.name, params={"mode": "ramp"})
    calls = len(CALLS)
    for changes in ({"opacity": 0.9}, {"cmap": "viridis"}, {"polarity": "signed"},
                    {"clip_percentile": 95.0}):
        scene = session.display(**changes)
        expected = scene.explanation.render(**vars(session.settings))[0]
        np.testing.assert_array_equal(scene.frame.heat, expected.heat)
    assert len(CALLS) == calls
    assert session.settings.opacity == 0.9 and session.settings.cmap == "viridis"


def test_value_at_and_occlusion(small) -> None:
    session = Session({"small": small}, photos(), threaded=False)
    scene = session.select(method="grad_cam", layer="layer3")
    assert session.value_at(10, 20) == float(scene.frame.values[20, 10])
    assert session.value_at(-1, 5) is None
    occluded = session.occlude((16, 8, 40, 30))
    assert occluded is not None and occluded.occlusion is not None
    inputs = session.prepared("small", "photo0").inputs.clone()
    inputs[..., 8:30, 16:40] = 0.0  # display and input are both 64×64 here
    with torch.no_grad():
        expected = small.model(inputs).softmax(dim=1)[0]
    for index, probability in occluded.occlusion.probabilities.items():
        assert abs(probability - float(expected[index])) < 1e-5
    assert (occluded.occlusion.image[8:30, 16:40] == np.round(
        np.array(small.preprocessing.mean) * 255)).all()
    assert session.occlude(None).occlusion is None


def test_a_newer_job_supersedes_an_older_one(small, probes) -> None:
    _, slow = probes
    session = Session({"small": small}, photos(), threaded=True)
    session.select()
    scenes: list = []
    progress: list = []
    session.subscribe(lambda e, p: scenes.append(p) if e == "scene" else
                      progress.append(p) if e == "progress" else None)
    assert session.select(method=slow.name, params={"steps": 40, "pause": 0.02}) is None
    wait_until(lambda: any(p not in (None, 0.0) for p in progress))
    session.select(method=slow.name, params={"steps": 2, "pause": 0.0, "scale": 3.0})
    wait_until(lambda: not session.busy and scenes)
    assert len(scenes) == 1  # the superseded job never showed a scene
    assert float(scenes[0].explanation.map.max()) == 3.0
    first = [c for c in CALLS if c["steps"] == 40]
    assert first  # it had started, and stopped early: no scene for it


def test_cancel_and_errors_in_jobs(small, probes) -> None:
    _, slow = probes
    session = Session({"small": small}, photos(), threaded=True)
    good = session.select()
    statuses: list = []
    session.subscribe(lambda e, p: statuses.append(p) if e == "status" else None)
    session.select(method=slow.name, params={"steps": 50, "pause": 0.02})
    wait_until(lambda: len(CALLS) == 1)
    session.cancel()
    wait_until(lambda: not session.busy)
    assert session.scene is good and statuses[-1] == ("cancelled", "info")

    def broken(_ctx):
        raise RuntimeError("kernel exploded")

    from dataclasses import replace

    from xai_widgets.kernels import REGISTRY
    REGISTRY[slow.name] = replace(slow, compute=broken)
    session.select(method=slow.name, params={"steps": 1})
    wait_until(lambda: not session.busy and statuses[-1][1] == "error")
    assert statuses[-1][0] == "RuntimeError: kernel exploded"
    assert session.scene is good


def test_interactions_during_a_job(small, probes) -> None:
    _, slow = probes
    session = Session({"small": small}, photos(), threaded=True)
    session.select(method="grad_cam")
    scenes: list = []
    session.subscribe(lambda e, p: scenes.append(p) if e == "scene" else None)
    session.select(method=slow.name, params={"steps": 50, "pause": 0.2})
    wait_until(lambda: len(CALLS) == 1)
    assert session.occlude((0, 0, 20, 20)) is not None  # answered between two chunks,
    assert session.busy  # while the 10-second job goes on
    scene = session.select(method="grad_cam", target=3)  # a new choice supersedes the job
    assert scene is not None
    wait_until(lambda: not session.busy)
    assert [s.selection.method for s in scenes] == ["grad_cam", "grad_cam"]


def test_rapid_changes_leave_no_backlog_or_growth(small) -> None:
    model = small.model
    hooks_before = sum(len(m._forward_hooks) for m in model.modules())
    session = Session({"small": small}, photos(), threaded=True)
    rng = np.random.default_rng(0)
    methods = ["grad_cam", "grad_cam_pp", "layer_cam", "saliency", "cam", "guided_backprop"]
    layers = ["layer1", "layer2", "layer3", "layer4"]
    gc.collect()
    for step in range(200):
        choice = rng.integers(0, 5)
        if choice == 0:
            session.select(method=methods[rng.integers(len(methods))])
        elif choice == 1:
            session.select(layer=layers[rng.integers(len(layers))])
        elif choice == 2:
            session.select(target=int(rng.integers(10)))
        elif choice == 3:
            session.select(image=f"photo{rng.integers(3)}")
        else:
            session.display(opacity=float(rng.random()))
        if step == 100:
            threads = threading.active_count()
    assert not session.busy
    assert threading.active_count() <= threads + 1
    assert len(session._explanations) <= 32 and len(session._traces) <= 2
    assert len(session._prepared) <= 8
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks_before
    assert torch._C._len_torch_function_stack() == 0


def test_lru_keeps_the_most_recent() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and len(cache) == 2


def test_uploads_are_bounded_in_bytes_count_and_decoded_memory(small) -> None:
    session = Session({"small": small}, photos(), threaded=False)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((3000, 3000, 3), np.uint8)).save(buffer, format="PNG")
    huge = buffer.getvalue()  # some KB that decode to 27 MB
    assert len(huge) < 2**17
    names = [session.add_image("big.png", huge) for _ in range(Session.MAX_UPLOADS + 4)]
    uploaded = [name for name in session.images if name.startswith("big.png")]
    assert uploaded == names[-Session.MAX_UPLOADS:]  # the oldest went
    assert all(isinstance(session.images[name], bytes) for name in uploaded)  # not decoded
    with pytest.raises(xw.ImageError, match="uploads are limited to 32 MiB"):
        session.add_image("large.bin", b"\0" * (Session.MAX_UPLOAD_BYTES + 1))


def test_a_session_needs_a_model_and_an_image() -> None:
    with pytest.raises(ValueError, match="at least one model and one image"):
        Session({}, {})
