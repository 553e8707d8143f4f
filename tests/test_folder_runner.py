"""The folder runner (``xai_widgets.distributed``): results in the order of the items, here and
on a 2-worker Dask LocalCluster where tasks finish out of order; the setup once per process;
progress as tasks finish; early stops cancel; errors reach the caller; the device plan with
faked GPU counts; the dashboard on the bar."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dask_cluster import dask_client
from support import wait_until

from xai_widgets import distributed
from xai_widgets.distributed import Plan, device_for, plan
from xai_widgets.errors import ParameterError
from xai_widgets.progress import items_bar

client = pytest.fixture(dask_client)


def _setup(log: str) -> dict[str, Any]:
    with open(log, "a") as stream:
        stream.write(f"{os.getpid()}\n")
    return {"pid": os.getpid()}


def _squares(state: dict[str, Any], chunk: list[int]) -> list[tuple[int, int]]:
    time.sleep(0.1 if chunk[0] % 2 == 0 else 0.0)   # even chunks finish later: out of order
    if 13 in chunk:
        raise ValueError("thirteen")
    return [(x * x, state["pid"]) for x in chunk]


def _run(log: Path, items: list[int], task_size: int, client: Any = None,
         done: list[int] | None = None) -> list[tuple[int, int]]:
    from functools import partial

    return list(distributed.run(items, partial(_setup, str(log)), _squares, client=client,
                                task_size=task_size, done=None if done is None else done.append))


def test_here_the_results_come_in_order_after_one_setup(tmp_path: Path) -> None:
    done: list[int] = []
    results = _run(tmp_path / "log", list(range(10)), 4, done=done)
    assert [r for r, _ in results] == [x * x for x in range(10)]
    assert done == [4, 4, 2]
    assert (tmp_path / "log").read_text().split() == [str(os.getpid())]
    assert _run(tmp_path / "log", [], 4) == []


def test_a_cluster_gives_the_same_results_with_one_setup_per_worker(tmp_path: Path,
                                                                     client) -> None:
    items = [x for x in range(40) if x != 13]
    done: list[int] = []
    results = _run(tmp_path / "log", items, 2, client=client, done=done)
    assert [r for r, _ in results] == [x * x for x in items]
    assert sum(done) == len(items) and len(done) == 20
    pids = {pid for _, pid in results}
    assert len(pids) == 2 and os.getpid() not in pids                     # both workers ran
    setups = (tmp_path / "log").read_text().split()
    assert sorted(setups) == sorted(str(pid) for pid in pids)             # once per worker


def test_a_cluster_stops_early_and_reports_errors(tmp_path: Path, client) -> None:
    from functools import partial

    stream = distributed.run(list(range(14, 200)), partial(_setup, str(tmp_path / "log")),
                             _squares, client=client, task_size=1)
    assert next(stream)[0] == 196
    stream.close()                                  # the unfinished tasks are cancelled
    wait_until(lambda: not any(client.processing().values()))
    with pytest.raises(ValueError, match="thirteen"):
        _run(tmp_path / "log", list(range(20)), 3, client=client)


def test_task_size_and_workers_are_checked() -> None:
    for bad in (0, -1, 1.5, True, "4"):
        with pytest.raises(ParameterError, match="task_size must be an integer >= 1"):
            list(distributed.run([1], dict, _squares, task_size=bad))  # type: ignore[arg-type]
        if bad != 1.5:
            with pytest.raises(ParameterError, match="workers must be an integer >= 1"):
                plan(bad, 0, 2)  # type: ignore[arg-type]


def test_one_worker_per_gpu_else_one_single_threaded_worker_per_core() -> None:
    assert plan(None, gpus=0, cores=2) == Plan(2, 1, 0)
    assert plan(None, gpus=4, cores=64) == Plan(4, 1, 4)
    assert plan(3, gpus=0, cores=2) == Plan(3, 1, 0)
    assert plan(8, gpus=4, cores=64) == Plan(8, 1, 4)
    assert [device_for(i, 4) for i in range(6)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3",
                                                    "cuda:0", "cuda:1"]
    assert device_for("2", 4) == "cuda:2" and device_for("tcp://10.0.0.5:4242", 4) == "cuda:0"
    assert device_for(3, 0) is None
    assert distributed.worker_device() is None                          # not in a worker


def test_workers_without_dask_say_what_to_install(monkeypatch) -> None:
    parser = argparse.ArgumentParser()
    distributed.add_options(parser)
    with distributed.client_for(parser.parse_args([])) as none:
        assert none is None                                        # neither option: here
    monkeypatch.setitem(sys.modules, "distributed", None)
    for argv in (["--workers", "2"], ["--workers", "0"], ["--scheduler", "tcp://head:8786"]):
        with pytest.raises(ParameterError, match=r"a distributed run needs Dask: pip install "
                                                 r"\"xai-widgets\[distributed\]\""), \
                distributed.client_for(parser.parse_args(argv)):
            pass


def test_the_bar_shows_the_dashboard() -> None:
    class Client:
        dashboard_link = "http://127.0.0.1:8787/status"

    with items_bar("evaluate", 3, client=Client()) as bar:
        assert "dashboard http://127.0.0.1:8787/status" in str(bar)
    with items_bar("evaluate", 3) as bar:
        assert "dashboard" not in str(bar)


def _worker_settings() -> tuple[object, str | None]:
    import dask

    return (dask.config.get("distributed.worker.profile.enabled"),
            os.environ.get("MALLOC_TRIM_THRESHOLD_"))


def test_our_workers_run_without_what_slows_torch(client) -> None:
    # the shared cluster comes from local_client: no profiler thread, glibc's adaptive mmap
    assert set(client.run(_worker_settings).values()) == {(False, None)}
