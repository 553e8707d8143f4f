"""A folder evaluation on a Dask distributed cluster: the same records, in the same order.

:func:`~xai_widgets.metrics.evaluate_folder` with ``client=`` (a ``distributed.Client``: of a
``LocalCluster`` on this machine, or of a scheduler on a cluster) sends the images to the
workers in tasks of ``task_size`` images. The model and the settings go to every worker as
bytes, which each worker unpickles once, at its first task of the run; each task returns its
images' records, and this
process writes them in the order of the image list, so the results file is the one a
single-process run writes. A worker that dies mid-task loses nothing: the scheduler runs its
tasks again elsewhere, and since only this process writes, no record is written twice; an
interrupted run resumes from the file as usual. The workers read the images by their paths:
on several machines, the folder must be on a file system they share.

Dask is optional (``pip install "xai-widgets[distributed]"``); :func:`local_client` starts a
``LocalCluster`` of single-threaded worker processes.
"""

from __future__ import annotations

import pickle
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MetricError

if TYPE_CHECKING:
    from .folder import _Job

#: an image to evaluate: its file, its path relative to the folder, the methods still to run
Item = tuple[Path, str, list[str]]
INSTALL = 'pip install "xai-widgets[distributed]" (Dask distributed)'


def records(client: Any, job: _Job, items: Sequence[Item], task_size: int
            ) -> Iterator[list[dict[str, Any]]]:
    """The records of each item, in the order of ``items``, computed on ``client``'s
    workers in tasks of ``task_size`` items (the unfinished tasks are cancelled when the
    caller stops early)."""
    import cloudpickle
    from distributed import as_completed

    token = uuid.uuid4().hex
    payload = client.scatter(cloudpickle.dumps(job), broadcast=True, hash=False)
    chunks = [list(items[i:i + task_size]) for i in range(0, len(items), task_size)]
    futures = [client.submit(_task, token, payload, chunk, pure=False) for chunk in chunks]
    position = {future.key: index for index, future in enumerate(futures)}
    ready: dict[int, list[list[dict[str, Any]]]] = {}
    following = 0
    try:
        for future in as_completed(futures):
            ready[position[future.key]] = future.result()
            while following in ready:
                yield from ready.pop(following)
                following += 1
    finally:
        client.cancel(futures)


#: on a worker: the job of the run in progress by its token, unpickled once
_JOBS: dict[str, _Job] = {}
_LOADING = threading.Lock()


def check_task_size(task_size: Any) -> None:
    """A :class:`MetricError` unless ``task_size`` (images per task) is an integer >= 1."""
    if isinstance(task_size, bool) or not isinstance(task_size, int) or task_size < 1:
        raise MetricError(f"task_size must be an integer >= 1 (images per task), got "
                          f"{task_size!r}")


def _task(token: str, payload: bytes, chunk: list[Item]) -> list[list[dict[str, Any]]]:
    with _LOADING:
        if token not in _JOBS:
            _JOBS.clear()  # a worker keeps the model of one run only
            _JOBS[token] = pickle.loads(payload)
        job = _JOBS[token]
    return [job.image(file, relative, todo) for file, relative, todo in chunk]


@contextmanager
def local_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: of a new ``LocalCluster`` of ``workers`` single-threaded
    processes, or of the scheduler at ``scheduler`` (e.g. ``"tcp://head:8786"``); closed
    afterwards. Its dashboard's address is printed on stderr."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise MetricError(f"a distributed evaluation needs Dask: {INSTALL}") from exc
    if scheduler is not None:
        with Client(scheduler) as client:
            print(f"dashboard: {client.dashboard_link}", file=sys.stderr)
            yield client
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise MetricError(f"workers must be an integer >= 1, got {workers!r}")
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True) as cluster, \
            Client(cluster) as client:
        print(f"dashboard: {client.dashboard_link}", file=sys.stderr)
        yield client
