"""Scoped, restorable changes to a user's model.

Everything the toolkit does to a model (eval mode, forward hooks) happens inside one of these
context managers, and is undone in ``finally``, whether the body returns or raises: after any
call the model has the same modes, hooks and modules as before (DESIGN rule 2). Hooks and modes
are per model, not per thread, so :func:`model_lock` serialises the threads that use a model.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

ForwardHook = Callable[[nn.Module, Any, Any], Any]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the duration; restore each one's own flag."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def forward_hooks(hooks: Mapping[nn.Module, ForwardHook]) -> Iterator[None]:
    """Register one forward hook per module for the duration."""
    handles: list[RemovableHandle] = []
    try:
        for module, hook in hooks.items():
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


class FairLock:
    """A re-entrant lock granted in order of arrival: a thread that releases it and asks again
    at once (a job between two chunks) queues behind the threads already waiting."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._queue: deque[object] = deque()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._condition:
            if self._owner == me:
                self._depth += 1
                return
            ticket = object()
            self._queue.append(ticket)
            while self._owner is not None or self._queue[0] is not ticket:
                self._condition.wait()
            self._queue.popleft()
            self._owner, self._depth = me, 1

    def release(self) -> None:
        with self._condition:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a lock this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._condition.notify_all()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Let the waiting threads in: release the lock completely (however deeply held), then
        take it back at the same depth."""
        with self._condition:
            if self._owner != threading.get_ident():
                raise RuntimeError("pause of a lock this thread does not hold")
            depth, self._owner, self._depth = self._depth, None, 0
            self._condition.notify_all()
        try:
            yield
        finally:
            self.acquire()
            self._depth = depth

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


_LOCKS: weakref.WeakKeyDictionary[nn.Module, FairLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> FairLock:
    """The one lock of ``model``: whoever runs it with hooks or modes holds it, so that an
    Explorer job on a worker thread and a notebook cell never trace the model at once."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = FairLock()
        return lock
