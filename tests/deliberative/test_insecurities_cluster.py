"""``hardest`` and ``xai-widgets insecurities`` on a 2-worker Dask LocalCluster: the ranking,
the records and the gallery of a single-process run."""

from __future__ import annotations

import pytest
import torch
from dask_cluster import dask_client
from PIL import Image
from support import random_photos
from test_insecurities_cli import parse
from tiny_models import PlainNet, bundle

from xai_widgets import deliberative as dl
from xai_widgets.deliberative import cli

client = pytest.fixture(dask_client)

pytestmark = pytest.mark.slow


@pytest.fixture
def folder(tmp_path):
    return random_photos(tmp_path / "photos", (f"img{i}" for i in range(9)), (20, 24),
                         high=256, broken=b"no")


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return bundle(PlainNet(6), 16, classes=6)


def _ranked(ranking: dl.Ranking) -> list[tuple]:
    return [(h.name, h.score, h.index, h.top) for h in ranking]


def test_a_cluster_ranks_as_one_process(folder, tiny, client) -> None:
    seen: list[float] = []
    alone = dl.hardest(tiny, folder, k=4, difficulty="entropy", batch_size=3)
    shared = dl.hardest(tiny, folder, k=4, difficulty="entropy", batch_size=3, client=client,
                        progress=seen.append)
    assert _ranked(shared) == _ranked(alone) and len(shared) == 4
    assert (shared.total, shared.failed) == (alone.total, alone.failed) == (
        9, [("broken.jpg", alone.failed[0][1])])
    assert sorted(seen) == seen and seen[-1] == 1.0
    pictures = [Image.open(p) for p in sorted(folder.glob("*.png"))]
    assert _ranked(dl.hardest(tiny, pictures, k=9, difficulty="cs", batch_size=4,
                              client=client)) == \
        _ranked(dl.hardest(tiny, pictures, k=9, difficulty="cs", batch_size=4))


def test_the_command_writes_the_files_of_one_process(folder, tiny, tmp_path, client) -> None:
    outputs = {}
    for where, used in (("alone", None), ("shared", client)):
        out = tmp_path / where / "insecurities.jsonl"
        args = parse(["insecurities", str(folder), "--k", "3", "--out", str(out),
                      "--top-classes", "3", "--difficulty", "cs", "--batch-size", "2"])
        assert cli._run(args, tiny, "cs", used) == 0
        outputs[where] = {p.relative_to(tmp_path / where).as_posix(): p.read_bytes()
                          for p in sorted((tmp_path / where).rglob("*")) if p.is_file()}
    alone, shared = outputs["alone"], outputs["shared"]
    assert sum(name.endswith(".png") for name in alone) == 3
    _header, *rest = alone["insecurities.jsonl"].splitlines()
    assert len(rest) == 3
    assert shared == alone
