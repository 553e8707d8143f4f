"""Feature extraction: labels, the disk cache and its keys, unreadable files, clear errors, and
the model-unchanged contract of every x-feature call."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_contract import assert_same, snapshot
from xf_synthetic import PREPROCESSING, TinyCNN

import xai_widgets as xw
from xai_widgets.errors import LayerError, TargetError
from xai_widgets.xfeatures import FeatureSet, XFeatureDataError, load, train


@pytest.fixture
def tiny() -> xw.ModelBundle:
    torch.manual_seed(0)
    return xw.ModelBundle(TinyCNN().eval(), PREPROCESSING, ["red", "blue", "patterns"], "tiny")


def _pictures(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            for _ in range(count)]


def _tree(root: Path, positives: int = 4, negatives: int = 6) -> Path:
    for folder, count, seed in (("patterns", positives, 1), ("red", negatives, 2)):
        (root / folder).mkdir(parents=True)
        for i, picture in enumerate(_pictures(count, seed)):
            picture.save(root / folder / f"{i}.png")
    return root


def test_image_folder_tree_labels_by_folder_and_reports_unreadable(tiny, tmp_path) -> None:
    root = _tree(tmp_path / "tree")
    (root / "red" / "broken.jpg").write_bytes(b"not an image")
    data = FeatureSet.extract(tiny, root, cls="patterns", cache_dir=False)
    assert len(data) == 10
    assert data.positive.tolist() == [True] * 4 + [False] * 6
    assert [name for name, _ in data.unreadable] == ["red/broken.jpg"]
    # Z is the input of the last linear layer, y the logit of the class
    with torch.inference_mode():
        inputs = tiny.prepare(sorted((root / "patterns").iterdir())).inputs
        pooled = tiny.model.pool(tiny.model.features(inputs)).flatten(1)
        logits = tiny.model(inputs)
    torch.testing.assert_close(data.z[:4], pooled)
    torch.testing.assert_close(data.y[:4], logits[:, 2])
    assert data.layer == "fc:input"


def test_cache_is_reused_and_keyed_by_model_layer_and_contents(tiny, tmp_path) -> None:
    pictures = _pictures(6)
    positives = [True, False] * 3
    first = FeatureSet.extract(tiny, pictures, "patterns", cache_dir=tmp_path,
                               positives=positives)
    assert first.cached == 0
    again = FeatureSet.extract(tiny, pictures, "patterns", cache_dir=tmp_path,
                               positives=positives)
    assert again.cached == 6
    torch.testing.assert_close(again.z, first.z)
    other_class = FeatureSet.extract(tiny, pictures, "red", cache_dir=tmp_path,
                                     positives=positives)
    assert other_class.cached == 6  # all logits are cached: no model run for another class
    # another layer
    pooled = FeatureSet.extract(tiny, pictures, "patterns", layer="pool", cache_dir=tmp_path,
                                positives=positives)
    assert pooled.cached == 0 and pooled.layer == "pool"
    # changed weights: a different model
    changed = copy.deepcopy(tiny.model)
    with torch.no_grad():
        changed.fc.bias[0] += 1.0
    bundle = xw.ModelBundle(changed, PREPROCESSING, tiny.class_names)
    assert FeatureSet.extract(bundle, pictures, "patterns", cache_dir=tmp_path,
                              positives=positives).cached == 0
    # a changed image: only that one runs again
    pictures[0] = _pictures(1, seed=9)[0]
    assert FeatureSet.extract(tiny, pictures, "patterns", cache_dir=tmp_path,
                              positives=positives).cached == 5


def test_flat_folder_labels_by_prediction(tiny, tmp_path) -> None:
    pictures = _pictures(8)
    with torch.inference_mode():
        predicted = tiny.model(tiny.prepare(pictures).inputs).argmax(dim=1)
    cls = int(torch.bincount(predicted, minlength=3).argmax())
    folder = tmp_path / "flat"
    folder.mkdir()
    for i, picture in enumerate(pictures):
        picture.save(folder / f"{i}.png")
    if bool((predicted == cls).all()):
        with pytest.raises(XFeatureDataError, match="every image"):
            FeatureSet.extract(tiny, folder, cls, cache_dir=False)
    else:
        data = FeatureSet.extract(tiny, folder, cls, cache_dir=False)
        assert data.positive.tolist() == (predicted == cls).tolist()


def test_clear_errors(tiny, tmp_path) -> None:
    pictures = _pictures(6)
    with pytest.raises(XFeatureDataError, match="no image of the class 'patterns'"):
        FeatureSet.extract(tiny, pictures, "patterns", cache_dir=False, positives=[False] * 6)
    with pytest.raises(XFeatureDataError, match="only 1 readable image"):
        FeatureSet.extract(tiny, pictures[:1], "patterns", cache_dir=False, positives=[True])
    with pytest.raises(LayerError, match="not a vector"):
        FeatureSet.extract(tiny, pictures, "patterns", layer="features.2", cache_dir=False)
    with pytest.raises(LayerError, match="did you mean 'pool'"):
        FeatureSet.extract(tiny, pictures, "patterns", layer="poll", cache_dir=False)
    with pytest.raises(TargetError, match="did you mean 'patterns'"):
        FeatureSet.extract(tiny, pictures, "pattern", cache_dir=False)
    with pytest.raises(TargetError, match="say which class"):
        FeatureSet.extract(tiny, pictures, cache_dir=False)
    root = _tree(tmp_path / "tree")
    with pytest.raises(XFeatureDataError, match=r"no sub-folder .* named after the class 'blue'"):
        FeatureSet.extract(tiny, root, "blue", cache_dir=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.jpg").write_bytes(b"nope")
    with pytest.raises(XFeatureDataError, match="no readable image"):
        FeatureSet.extract(tiny, empty, "patterns", cache_dir=False)


def test_the_model_is_never_changed(tiny, tmp_path) -> None:
    model = tiny.model
    model.train()  # a user's model in training mode stays so
    before = snapshot(model)
    pictures = _pictures(12)
    data = FeatureSet.extract(tiny, pictures, "patterns", cache_dir=tmp_path,
                              positives=[True, False] * 6)
    xnn = train(data, n_features=2, seed=0, hidden=(8, 4), pretrain_epochs=1, epochs=1,
                retune_rounds=1)
    xnn.explain(pictures[:2], layer="features.2")
    xnn.explain(pictures[:1], layer="input")
    xnn.contributions(pictures[:2])
    with pytest.raises(LayerError):
        xnn.explain(pictures[:1], layer="nope")
    xnn.save(tmp_path / "a.xnn")
    load(tmp_path / "a.xnn", tiny).explain(pictures[:1])
    assert_same(before, snapshot(model))
