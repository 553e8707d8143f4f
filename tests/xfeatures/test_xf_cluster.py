"""x-feature extraction on a 2-worker Dask LocalCluster: the features of a single-process run,
unreadable files reported alike, and the cache written by this process only."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from dask_cluster import dask_client
from PIL import Image
from xf_synthetic import PREPROCESSING, TinyCNN

import xai_widgets as xw
from xai_widgets.xfeatures import FeatureSet

client = pytest.fixture(dask_client)

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny() -> xw.ModelBundle:
    torch.manual_seed(0)
    return xw.ModelBundle(TinyCNN().eval(), PREPROCESSING, ["red", "blue", "patterns"], "tiny")


@pytest.fixture
def tree(tmp_path):
    rng = np.random.default_rng(0)
    for folder, count in (("patterns", 5), ("red", 6)):
        (tmp_path / "tree" / folder).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "tree" / folder / f"{i}.png")
    (tmp_path / "tree" / "red" / "broken.jpg").write_bytes(b"not an image")
    return tmp_path / "tree"


def _same(a: FeatureSet, b: FeatureSet) -> None:
    assert torch.equal(a.z, b.z) and torch.equal(a.y, b.y) and torch.equal(a.logits, b.logits)
    assert (a.names, _reasons(a), a.positive.tolist()) == (b.names, _reasons(b),
                                                           b.positive.tolist())


def _reasons(data: FeatureSet) -> list[tuple[str, str]]:
    """Why images are unreadable, without the object addresses that Pillow's errors name."""
    return [(name, re.sub(r"0x[0-9a-f]+", "0x?", why)) for name, why in data.unreadable]


def test_a_cluster_extracts_the_features_of_one_process(tiny, tree, tmp_path, client) -> None:
    seen: list[float] = []
    alone = FeatureSet.extract(tiny, tree, "patterns", cache_dir=False, batch_size=3)
    shared = FeatureSet.extract(tiny, tree, "patterns", cache_dir=False, batch_size=3,
                                client=client, progress=seen.append)
    _same(shared, alone)
    assert len(shared) == 11 and [n for n, _ in shared.unreadable] == ["red/broken.jpg"]
    assert seen[-1] == 1.0 and len(seen) == 4                     # 4 tasks of 3 images
    cache = tmp_path / "cache"
    first = FeatureSet.extract(tiny, tree, "patterns", cache_dir=cache, batch_size=3,
                               client=client)
    again = FeatureSet.extract(tiny, tree, "patterns", cache_dir=cache, batch_size=3)
    assert (first.cached, again.cached) == (0, 11)
    _same(again, alone)
