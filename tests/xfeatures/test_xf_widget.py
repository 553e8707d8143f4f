"""The XFeatures app without a browser: set controls, compare with direct calls."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support import wait_until
from xf_synthetic import Synthetic, write_tree

from xai_widgets import xfeatures
from xai_widgets.widgets import XFeatures

QUICK = {"hidden": (8, 4), "pretrain_epochs": 1, "retune_rounds": 1}


@pytest.fixture(scope="module")
def folder(synthetic: Synthetic, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tree(tmp_path_factory.mktemp("tree"), synthetic.inputs, synthetic.present, 60)


@pytest.fixture(scope="module")
def app(synthetic: Synthetic, folder: Path) -> XFeatures:
    photos = {f"image {i}": synthetic.inputs[i] for i in range(3)}
    app = XFeatures(synthetic.bundle, images=str(folder), cls="patterns",
                    n_features=2, epochs=2, photos=photos, threaded=False, cache_dir=False,
                    **QUICK)
    app.start()
    return app


def test_training_equals_the_direct_call(app: XFeatures, synthetic: Synthetic,
                                         folder: Path) -> None:
    assert app.xnn is not None and app.progress.value == 1.0, app.status.value
    data = xfeatures.FeatureSet.extract(synthetic.bundle, folder, cls="patterns",
                                        cache_dir=False)
    direct = xfeatures.train(data, n_features=2, seed=0, epochs=2, **QUICK)
    for a, b in zip(app.xnn.srae.state_dict().values(), direct.srae.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert app.losses.value and app.diagnostics.value
    assert "R²" in app.faithfulness.value


def test_maps_row_and_selection(app: XFeatures, synthetic: Synthetic) -> None:
    app.layer.value = "features.2"
    app.photo.value = "image 1"
    direct = app.xnn.explain(synthetic.inputs[1], layer="features.2")  # type: ignore[union-attr]
    torch.testing.assert_close(app.maps.maps, direct.maps)  # type: ignore[union-attr]
    assert [cell.children[1].description for cell in app.row.children] == direct.titles(0)
    app.row.children[1].children[1].click()
    assert app.selected == 1
    assert direct.titles(0)[1] in app.status.value


def test_errors_go_to_the_status_line(app: XFeatures) -> None:
    xnn = app.xnn
    app.cls.value = "no such class"
    app.start()
    assert "error" in app.status.value and "unknown class" in app.status.value
    assert app.xnn is xnn and not app.train_button.disabled


def test_training_on_the_worker_thread_can_be_cancelled(synthetic: Synthetic,
                                                        folder: Path) -> None:
    app = XFeatures(synthetic.bundle, images=str(folder), cls="patterns", n_features=2,
                    epochs=100_000, photos={"one": synthetic.inputs[0]}, cache_dir=False,
                    **QUICK)
    app.start()
    wait_until(lambda: app.progress.value > 0.1 and app.series, timeout=300)
    assert "loss" in app.series or "pretrain" in app.series
    app.cancel()
    assert app.wait(60)
    assert app.status.value == "training cancelled"
    assert app.xnn is None and not app.train_button.disabled
