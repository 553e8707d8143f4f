"""A folder evaluation on a Dask LocalCluster of two worker processes: the file of a
single-process run (JSON lines and Parquet), a worker killed mid-run, a resumed run, the model
loaded once per worker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from dask_cluster import dask_client
from metric_models import Fragile
from support import random_photos
from tiny_models import bundle

from xai_widgets import metrics
from xai_widgets.distributed import local_client
from xai_widgets.errors import ParameterError
from xai_widgets.metrics import Cancelled

pytest.importorskip("distributed")

client = pytest.fixture(dask_client)

pytestmark = pytest.mark.slow
QUICK = {"methods": ["grad_cam", "saliency"], "metrics": ["deletion", "insertion"],
         "pixels_per_step": 64, "progress": False, "plots": False}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Seven 16×16 photos and a broken JPEG."""
    return random_photos(tmp_path / "images", "abcdefg")


def fragile(tmp_path: Path, marker: str | None = None):
    torch.manual_seed(0)
    return bundle(Fragile(str(tmp_path / "loads.log"), marker).eval(), size=16, classes=5)


def test_a_cluster_writes_the_file_of_one_process(folder: Path, tmp_path: Path, client) -> None:
    model = fragile(tmp_path)
    alone = metrics.evaluate_folder(folder, model, out=tmp_path / "alone.jsonl", **QUICK)
    (tmp_path / "loads.log").unlink(missing_ok=True)
    shared = metrics.evaluate_folder(folder, model, out=tmp_path / "shared.jsonl", client=client,
                                     task_size=2, **QUICK)
    assert shared.out.read_bytes() == alone.out.read_bytes()
    assert (shared.written, len(shared.failed)) == (2 * 7, 1)            # broken.jpg recorded
    loads = (tmp_path / "loads.log").read_text().split()
    assert len(loads) == len(set(loads)) == 2                             # once per worker


def test_a_cluster_writes_the_parquet_of_one_process(folder: Path, tmp_path: Path,
                                                     client) -> None:
    pytest.importorskip("pyarrow")
    model = fragile(tmp_path)
    alone = metrics.evaluate_folder(folder, model, out=tmp_path / "alone.jsonl", **QUICK)
    shared = metrics.evaluate_folder(folder, model, out=tmp_path / "shared.parquet",
                                     client=client, task_size=3, **QUICK)
    assert shared.out.is_dir()
    assert str(shared.summary) == str(alone.summary)
    assert (shared.written, len(shared.failed)) == (alone.written, len(alone.failed))


def test_an_interrupted_cluster_run_resumes(folder: Path, tmp_path: Path, client) -> None:
    model = fragile(tmp_path)
    alone = metrics.evaluate_folder(folder, model, out=tmp_path / "alone.jsonl", **QUICK)
    out = tmp_path / "shared.jsonl"

    def stop_after_three(fraction: float, _preview: object) -> None:
        if fraction >= 3 / 8:
            raise Cancelled

    with pytest.raises(Cancelled):
        metrics.evaluate_folder(folder, model, out=out, client=client, task_size=1,
                                **{**QUICK, "progress": stop_after_three})
    assert len(out.read_text().splitlines()) == 1 + 2 * 2 + 1              # a, b, broken.jpg
    run = metrics.evaluate_folder(folder, model, out=out, client=client, **QUICK)
    assert run.skipped == 3
    assert out.read_bytes() == alone.out.read_bytes()


def test_a_worker_killed_mid_run_loses_nothing(folder: Path, tmp_path: Path, client) -> None:
    marker = tmp_path / "killed"
    model = fragile(tmp_path, str(marker))
    alone = metrics.evaluate_folder(folder, model, out=tmp_path / "alone.jsonl", **QUICK)
    shared = metrics.evaluate_folder(folder, model, out=tmp_path / "shared.jsonl", client=client,
                                     task_size=2, **QUICK)
    assert marker.exists()                                  # a worker died during the run
    assert shared.out.read_bytes() == alone.out.read_bytes()


def test_cluster_settings_say_what_is_wrong(monkeypatch, folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="workers must be an integer >= 1, got -1"), \
            local_client(workers=-1):
        pass
    with pytest.raises(ParameterError,
                       match=r"task_size must be an integer >= 1 \(images per task\), got 0"):
        metrics.evaluate_folder(folder, fragile(tmp_path), out=tmp_path / "r.jsonl",
                                client=object(), task_size=0, **QUICK)
    assert not (tmp_path / "r.jsonl").exists()
    monkeypatch.setitem(sys.modules, "distributed", None)        # Dask not installed
    with pytest.raises(ParameterError, match=r"needs Dask: pip install "
                                             r"\"xai-widgets\[distributed\]\""), \
            local_client(workers=2):
        pass
