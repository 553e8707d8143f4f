"""Background jobs: one worker thread, supersede and cancel, progress as typed events.

Everything that takes longer than an interaction (an iterative method in the Explorer, the
metrics panel's curves, a sanity check, training an x-feature network or a hardness
predictor) runs as a :class:`Job` on a :class:`JobRunner`:

* jobs run one at a time, in order, on one daemon thread (started on demand, ended when idle);
  ``threaded=False`` runs each job in the calling thread (scripts, tests);
* ``job.compute(progress)`` does the work and calls ``progress(fraction, preview)`` between
  chunks; that call raises :class:`Cancelled` once the job was cancelled, so the work stops
  there and leaves nothing half-changed;
* a job may hold a :class:`~xai_widgets.scope.FairLock` (its model's lock) while it computes;
  the lock is paused around every progress call, so a quick interaction waits at most one
  chunk;
* the runner reports what happens as events: :class:`Started`, :class:`Progressed`,
  :class:`Finished`, :class:`Failed` and :class:`Stopped` (cancelled or superseded), each
  carrying its job, to the ``listener`` given at construction.

A progress callback is the same protocol the kernels use (:data:`Progress`): the preview is
whatever the work reports (a raw map, a loss so far, ``None``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from .scope import FairLock

#: ``progress(fraction_done, preview)``: called between chunks; may raise :class:`Cancelled`
Progress = Callable[[float, Any], None]


class Cancelled(Exception):
    """Raised by a progress callback to stop the work between two chunks."""


@dataclass(eq=False)
class Job:
    """Work for the runner: ``compute(progress)`` returns a result; ``kind`` groups jobs that
    supersede each other and ``key`` says what is computed (the same key is not run twice at
    once); ``lock`` is held while computing, paused at every progress call."""

    kind: str
    key: Hashable
    compute: Callable[[Progress], Any]
    lock: FairLock | None = None
    #: set by :meth:`JobRunner.drop`
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Started:
    job: Job


@dataclass(frozen=True)
class Progressed:
    job: Job
    fraction: float
    preview: Any


@dataclass(frozen=True)
class Finished:
    job: Job
    result: Any


@dataclass(frozen=True)
class Failed:
    job: Job
    error: Exception


@dataclass(frozen=True)
class Stopped:
    """The job was dropped (:meth:`JobRunner.drop`) while it ran or waited; sent at once, so
    that it comes before the events of the job that supersedes it."""

    job: Job


JobEvent = Started | Progressed | Finished | Failed | Stopped


class JobRunner:
    """Runs :class:`Job` s one after the other on a worker thread and reports
    :data:`JobEvent` s to ``listener`` (called on the worker thread, or on the caller's when
    ``threaded=False``)."""

    IDLE_SECONDS = 30  # the worker thread ends after this long without work

    def __init__(self, listener: Callable[[JobEvent], None], threaded: bool = True) -> None:
        self.listener = listener
        self.threaded = threaded
        self._running: Job | None = None
        self._queue: deque[Job] = deque()
        self._worker: threading.Thread | None = None
        self._wake = threading.Condition()

    def submit(self, job: Job) -> None:
        """Queue ``job`` (or, when not threaded, run it now)."""
        self.listener(Started(job))
        if not self.threaded:
            self._run(job)
            return
        with self._wake:
            self._queue.append(job)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="xai-widgets-jobs",
                                                daemon=True)
                self._worker.start()
            self._wake.notify()

    def live(self) -> list[Job]:
        """The running and the waiting jobs that are not cancelled."""
        with self._wake:
            return [job for job in (self._running, *self._queue)
                    if job is not None and not job.cancelled.is_set()]

    def busy(self, *kinds: str) -> bool:
        """Whether a job of one of ``kinds`` (any kind when none is given) runs or waits."""
        return any(not kinds or job.kind in kinds for job in self.live())

    def drop(self, *kinds: str) -> list[Job]:
        """Cancel the running and waiting jobs of ``kinds`` (all when none is given); a
        :class:`Stopped` event is sent for each. Returns them."""
        with self._wake:
            dropped = [job for job in self.live() if not kinds or job.kind in kinds]
            for job in dropped:
                job.cancelled.set()
            self._queue = deque(job for job in self._queue if job not in dropped)
        for job in dropped:
            self.listener(Stopped(job))
        return dropped

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no job runs or waits (True), or ``timeout`` seconds passed (False)."""
        with self._wake:
            return self._wake.wait_for(lambda: self._running is None and not self._queue,
                                       timeout)

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue:
                    if not self._wake.wait(timeout=self.IDLE_SECONDS):
                        self._worker = None
                        return
                job = self._running = self._queue.popleft()
            try:
                self._run(job)
            finally:
                with self._wake:
                    self._running = None
                    self._wake.notify_all()

    def _run(self, job: Job) -> None:
        if job.cancelled.is_set():
            return
        lock = job.lock

        def progress(fraction: float, preview: Any = None) -> None:
            # between two chunks, the threads waiting for the lock (an occlusion, a notebook
            # cell) go first: the lock is fair
            with lock.paused() if lock is not None else nullcontext():
                if not job.cancelled.is_set():
                    self.listener(Progressed(job, fraction, preview))
            if job.cancelled.is_set():
                raise Cancelled

        try:
            with lock if lock is not None else nullcontext():
                result = job.compute(progress)
        except Cancelled:
            return  # Stopped was sent by whoever cancelled it
        except Exception as exc:
            self.listener(Failed(job, exc))
            return
        if job.cancelled.is_set():
            return
        self.listener(Finished(job, result))
