"""The folder runner: a per-item computation over a list, in one process or on Dask workers.

:func:`run` splits ``items`` into tasks of ``task_size``, computes each with
``work(state, chunk) -> one result per item``, and yields the results in the order of
``items``, whether it ran here or on the workers of a ``distributed.Client``. ``setup() ->
state`` (e.g. a job that holds the model) runs once here, or once per worker process and run:
it is pickled once (cloudpickle), sent to every worker, and unpickled and called at the
worker's first task of the run. A worker that dies mid-task loses nothing: the scheduler runs
its tasks again elsewhere, and only this process sees the results, so none is used twice. At
most a few tasks per worker thread are in flight, so neither this process nor the scheduler
holds a whole data set. The folder evaluation, :func:`~xai_widgets.deliberative.hardest` and
x-feature extraction all run on it.

Devices (:func:`plan`): with CUDA, one worker per GPU, each on the GPU of its index
(:func:`worker_device`); without, one single-threaded worker per core.

Dask is optional (``pip install "xai-widgets[distributed]"``); :func:`local_client` starts a
``LocalCluster`` on 127.0.0.1, or connects to a scheduler. Its workers differ from Dask's
defaults in two ways (:data:`WORKER_CONFIG`): they start without ``MALLOC_TRIM_THRESHOLD_``
(with it, glibc stops adapting its mmap threshold, every activation of a forward pass is
mapped afresh, and a ResNet-18 forward on a CPU took twice as long), and without Dask's
statistical profiler (its sampling thread, every 10 ms, cost 2 workers on 2 cores a tenth of
their throughput: 1.59× one worker with it, 1.77× without, benchmarks/results/distributed.md).
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ParameterError

T = TypeVar("T")
R = TypeVar("R")
INSTALL = 'pip install "xai-widgets[distributed]" (Dask distributed)'
#: tasks in flight per worker thread: enough to keep every worker busy
AHEAD = 4
#: Dask's defaults for new workers, less what slows torch on a CPU
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                 "distributed.worker.profile.enabled": False}


def run(items: Sequence[T], setup: Callable[[], Any],
        work: Callable[[Any, list[T]], list[R]], *, client: Any = None, task_size: int = 4,
        done: Callable[[int], None] | None = None) -> Iterator[R]:
    """The results of ``work(state, chunk)`` over ``items`` in chunks of ``task_size``, in
    the order of ``items``; ``state = setup()`` once here (``client=None``) or once per
    worker. ``done(n)`` is called as each chunk of ``n`` items finishes (on a cluster: in the
    order they finish, for progress bars). Stopping early cancels the unfinished tasks."""
    check_task_size(task_size)
    chunks = [list(items[i:i + task_size]) for i in range(0, len(items), task_size)]
    if client is None:
        state = setup()
        for chunk in chunks:
            results = work(state, chunk)
            _check_count(results, chunk)
            if done is not None:
                done(len(chunk))
            yield from results
        return
    yield from _on_cluster(client, chunks, setup, work, done)


def fractions(total: int, progress: Callable[[float], None] | None
              ) -> Callable[[int], None] | None:
    """A ``done(n)`` for :func:`run` that calls ``progress(fraction of the total done)``."""
    if progress is None:
        return None
    finished = 0

    def done(count: int) -> None:
        nonlocal finished
        finished += count
        progress(finished / total)

    return done


def _on_cluster(client: Any, chunks: list[list[T]], setup: Callable[[], Any],
                work: Callable[[Any, list[T]], list[R]],
                done: Callable[[int], None] | None) -> Iterator[R]:
    import cloudpickle
    from distributed import as_completed

    if not chunks:
        return
    token = uuid.uuid4().hex
    payload = client.scatter(cloudpickle.dumps((setup, work)), broadcast=True, hash=False)
    window = AHEAD * (sum(client.nthreads().values()) or 1)
    pending = iter(enumerate(chunks))
    position: dict[Any, int] = {}
    live: dict[Any, Any] = {}
    ready: dict[int, list[R]] = {}  # finished, waiting for an earlier task
    running = as_completed()

    def submit() -> None:
        """Tasks in flight or waiting to be yielded: at most ``window``."""
        while len(live) + len(ready) < window:
            found = next(pending, None)
            if found is None:
                return
            future = client.submit(_task, token, payload, found[1], pure=False)
            position[future.key], live[future.key] = found[0], future
            running.add(future)

    submit()
    following = 0
    try:
        for future in running:
            index = position.pop(future.key)
            ready[index] = future.result()
            del live[future.key]
            _check_count(ready[index], chunks[index])
            if done is not None:
                done(len(chunks[index]))
            while following in ready:
                yield from ready.pop(following)
                following += 1
            submit()
    finally:
        client.cancel(list(live.values()))


def _check_count(results: list[Any], chunk: list[Any]) -> None:
    if len(results) != len(chunk):
        raise RuntimeError(f"a task returned {len(results)} results for {len(chunk)} items")


#: on a worker: the state of the run in progress, by its token, set up once
_STATES: dict[str, tuple[Any, Callable[..., Any]]] = {}
_SETTING_UP = threading.Lock()


def _task(token: str, payload: bytes, chunk: list[Any]) -> list[Any]:
    with _SETTING_UP:
        if token not in _STATES:
            _STATES.clear()  # a worker keeps the state (the model) of one run only
            setup, work = pickle.loads(payload)
            _STATES[token] = (setup(), work)
        state, work = _STATES[token]
    return work(state, chunk)


def check_task_size(task_size: Any) -> None:
    """A :class:`ParameterError` unless ``task_size`` (items per task) is an integer >= 1."""
    if isinstance(task_size, bool) or not isinstance(task_size, int) or task_size < 1:
        raise ParameterError(f"task_size must be an integer >= 1 (images per task), got "
                             f"{task_size!r}")


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class Plan:
    """A local cluster: ``workers`` processes of ``threads`` threads; ``gpus`` > 0: worker
    ``i`` uses ``cuda:i`` (:func:`device_for`)."""

    workers: int
    threads: int
    gpus: int


def plan(workers: int | None, gpus: int, cores: int) -> Plan:
    """One worker per GPU when there are ``gpus``, else one single-threaded worker per core;
    ``workers`` overrides the count (more workers than GPUs share them round-robin)."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ParameterError(f"workers must be an integer >= 1, got {workers!r}")
    default = gpus if gpus > 0 else max(1, cores)
    return Plan(default if workers is None else workers, 1, gpus)


def device_for(worker: Any, gpus: int) -> str | None:
    """The device of a worker named ``worker`` (a LocalCluster names them 0, 1, ...):
    ``cuda:<name mod gpus>``; ``cuda:0`` for another name (start such workers with
    ``CUDA_VISIBLE_DEVICES`` set); ``None`` without a GPU (the model stays where it is)."""
    if gpus <= 0:
        return None
    index = int(worker) if isinstance(worker, int) or str(worker).isdigit() else 0
    return f"cuda:{index % gpus}"


def worker_device() -> str | None:
    """The device of the Dask worker this runs on (:func:`device_for`), ``None`` outside a
    worker or without CUDA; it is made the current CUDA device."""
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return None
    import torch

    device = device_for(name, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if device is not None:
        torch.cuda.set_device(device)
    return device


def placed(state: T, *modules: Any) -> T:
    """``state``, after moving ``modules`` (``nn.Module`` s) to the device of the Dask worker
    this runs on (:func:`worker_device`; nothing elsewhere): the usual ``setup`` of
    :func:`run`, as ``functools.partial(placed, job, job.model)``."""
    device = worker_device()
    if device is not None:
        for module in modules:
            module.to(device)
    return state


@contextmanager
def local_client(workers: int | None = None, scheduler: str | None = None
                 ) -> Iterator[Any]:
    """A ``distributed.Client``: of the scheduler at ``scheduler`` (e.g.
    ``"tcp://head:8786"``), or of a new ``LocalCluster`` on 127.0.0.1 laid out by
    :func:`plan` (``workers``: default one per GPU, else one per core); closed afterwards."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ParameterError(f"a distributed run needs Dask: {INSTALL}") from exc
    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    import torch

    layout = plan(workers, torch.cuda.device_count() if torch.cuda.is_available() else 0,
                  os.cpu_count() or 1)
    import dask

    with dask.config.set(WORKER_CONFIG), \
            LocalCluster(n_workers=layout.workers, threads_per_worker=layout.threads,
                         processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
                         ) as cluster, Client(cluster) as client:
        yield client


def add_options(parser: Any, task_size: bool = True) -> None:
    """``--workers``, ``--scheduler`` (and ``--task-size``) of a command that runs over a
    folder: :func:`client_for` reads them."""
    parser.add_argument("--workers", type=int, default=None,
                        help="run on a Dask LocalCluster (127.0.0.1) of this many "
                             "single-threaded worker processes; 0: one per CPU core, or with "
                             "CUDA one per GPU, each on its own GPU "
                             "(pip install 'xai-widgets[distributed]')")
    parser.add_argument("--scheduler", default=None,
                        help="run on the Dask cluster of this scheduler, e.g. tcp://head:8786 "
                             "(its workers must see the folder at the same path)")
    if task_size:
        parser.add_argument("--task-size", type=int, default=4,
                            help="images per task on a cluster (default 4)")


@contextmanager
def client_for(args: Any) -> Iterator[Any]:
    """The client that ``--workers`` / ``--scheduler`` ask for (``None``: neither, run in
    this process); the dashboard's address goes to stderr."""
    if args.workers is None and args.scheduler is None:
        yield None
        return
    with local_client(args.workers or None, args.scheduler) as client:
        link = dashboard(client)
        if link:
            print(f"dashboard: {link}", file=sys.stderr)
        yield client


def dashboard(client: Any) -> str | None:
    """The address of a client's dashboard, if it has one."""
    link = getattr(client, "dashboard_link", None)
    return str(link) if link else None
