"""The job runner: order, supersede/cancel, typed events, the lock paused between chunks."""

from __future__ import annotations

import threading

import pytest
from support import wait_until

from xai_widgets.jobs import (
    Cancelled,
    Failed,
    Finished,
    Job,
    JobEvent,
    JobRunner,
    Progressed,
    Started,
    Stopped,
)
from xai_widgets.scope import FairLock


def recorder() -> tuple[list[JobEvent], JobRunner]:
    events: list[JobEvent] = []
    return events, JobRunner(events.append, threaded=False)


def test_events_of_a_job_that_finishes() -> None:
    events, runner = recorder()

    def work(progress):
        progress(0.5, "half")
        return 42

    job = Job("train", "k", work)
    runner.submit(job)
    assert [type(e) for e in events] == [Started, Progressed, Finished]
    assert events[1] == Progressed(job, 0.5, "half")
    assert events[2] == Finished(job, 42)


def test_a_failure_is_an_event_not_an_exception() -> None:
    events, runner = recorder()
    error = ValueError("bad")

    def work(_progress):
        raise error

    runner.submit(Job("train", "k", work))
    assert isinstance(events[-1], Failed)
    assert events[-1].error is error


def test_a_dropped_job_stops_at_its_next_chunk_and_says_so_at_once() -> None:
    events: list[JobEvent] = []
    runner = JobRunner(events.append)
    started, chunks = threading.Event(), []
    release = threading.Event()

    def work(progress):
        started.set()
        for chunk in range(100):
            release.wait(5)
            chunks.append(chunk)
            progress(chunk / 100)
        return "never"

    job = Job("explain", "slow", work)
    runner.submit(job)
    started.wait(5)
    assert runner.busy("explain")
    assert not runner.busy("curves")
    dropped = runner.drop("explain")
    assert dropped == [job]
    assert isinstance(events[-1], Stopped)  # sent by drop(), before any newer job's events
    release.set()
    assert runner.wait(5)
    assert len(chunks) == 1  # the chunk under way ends; the next progress call stops it
    assert not any(isinstance(e, Finished) for e in events)
    assert not runner.busy()


def test_jobs_run_in_order_and_waiting_ones_can_be_dropped() -> None:
    done: list[str] = []
    gate = threading.Event()
    runner = JobRunner(lambda e: done.append(e.result) if isinstance(e, Finished) else None)
    runner.submit(Job("a", 1, lambda _p: gate.wait(5) and "first"))
    runner.submit(Job("b", 2, lambda _p: "second"))
    runner.submit(Job("c", 3, lambda _p: "third"))
    runner.drop("b")
    gate.set()
    assert runner.wait(5)
    assert done == ["first", "third"]


def test_the_lock_is_held_while_computing_and_paused_at_progress() -> None:
    lock = FairLock()
    runner = JobRunner(lambda _e: None)
    order: list[str] = []
    at_chunk, may_go_on = threading.Event(), threading.Event()

    def work(progress):
        order.append("chunk 1")
        at_chunk.set()
        may_go_on.wait(5)
        progress(0.5)  # a waiting thread gets the lock here
        order.append("chunk 2")

    runner.submit(Job("explain", "k", work, lock=lock))
    at_chunk.wait(5)

    def interaction() -> None:
        with lock:
            order.append("interaction")

    other = threading.Thread(target=interaction)
    other.start()
    wait_until(lambda: len(lock._queue) == 1)
    may_go_on.set()
    other.join(5)
    assert runner.wait(5)
    assert order == ["chunk 1", "interaction", "chunk 2"]


def test_cancelled_is_the_kernels_protocol() -> None:
    from xai_widgets.kernels.spec import Cancelled as KernelCancelled

    assert KernelCancelled is Cancelled
    with pytest.raises(Cancelled):
        raise KernelCancelled
