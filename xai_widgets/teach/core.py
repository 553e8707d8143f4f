"""Exercises that check themselves: the registry, the verdicts, the solutions.

An :class:`Exercise` has an id (``"cam.weights"``), the notebook it belongs to, the name of
the variable the student fills in, a solution (code that runs in the notebook's namespace)
and a ``verify(answer, **given)`` function that recomputes the right answer with the toolkit
and returns a :class:`Verdict`: *right*, *wrong* (and why), or *not yet* (the answer is still
``None`` or ``...``). Verification never matches strings: it runs the real method.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import XaiError

Status = Literal["right", "wrong", "not yet"]
MARKS = {"right": "✓", "wrong": "✗", "not yet": "…"}
COLOURS = {"right": "#1b7837", "wrong": "#b2182b", "not yet": "#555555"}


class Unreadable(ValueError):
    """An answer a check cannot compare (wrong type, shape, NaN): :func:`check` makes its
    message the "wrong" verdict's, as it is."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`check`: ``status`` (``"right"``, ``"wrong"``, ``"not yet"``)
    and a message that says why. ``bool(verdict)`` is True only when it is right."""

    exercise: str
    status: Status
    message: str

    def __bool__(self) -> bool:
        return self.status == "right"

    @property
    def right(self) -> bool:
        return self.status == "right"

    def __repr__(self) -> str:
        return f"{MARKS[self.status]} {self.exercise}: {self.status} — {self.message}"

    def _repr_html_(self) -> str:
        colour = COLOURS[self.status]
        return (f'<div class="xai-verdict xai-verdict-{self.status.replace(" ", "-")}" '
                f'style="border-left: 4px solid {colour}; padding: 2px 8px;">'
                f'<b style="color: {colour}">{MARKS[self.status]} {html.escape(self.status)}'
                f"</b> <code>{html.escape(self.exercise)}</code> — "
                f"{html.escape(self.message)}</div>")


@dataclass(frozen=True)
class Exercise:
    """One exercise: ``answer`` is the variable the student fills in, ``solution`` code for
    the notebook's namespace, ``verify(answer, **given) -> Verdict`` recomputes with the
    toolkit. ``given`` names what :func:`check` needs besides the answer."""

    id: str
    notebook: str
    title: str
    answer: str
    solution: str
    verify: Callable[..., Verdict]
    given: tuple[str, ...] = ()

    def right(self, message: str) -> Verdict:
        return Verdict(self.id, "right", message)

    def wrong(self, message: str) -> Verdict:
        return Verdict(self.id, "wrong", message + f" (stuck? solution({self.id!r}))")

    def not_yet(self) -> Verdict:
        return Verdict(self.id, "not yet", f"`{self.answer}` is not filled in yet; replace "
                       f"None with your answer and run the cell again")


EXERCISES: dict[str, Exercise] = {}


def exercise(id: str, notebook: str, title: str, answer: str, solution: str,
             given: tuple[str, ...] = ()) -> Callable[[Callable[..., Verdict]],
                                                      Callable[..., Verdict]]:
    """Decorator: register ``verify`` as the check of a new exercise."""

    def register(verify: Callable[..., Verdict]) -> Callable[..., Verdict]:
        if id in EXERCISES:
            raise ValueError(f"exercise {id!r} is registered twice")
        EXERCISES[id] = Exercise(id, notebook, title, answer,
                                 textwrap.dedent(solution).strip() + "\n", verify, given)
        return verify

    return register


def get(id: str) -> Exercise:
    from . import _load_all

    _load_all()
    if id not in EXERCISES:
        from ..errors import did_you_mean

        hint = did_you_mean(id, EXERCISES)
        raise XaiError(f"no exercise {id!r}; {hint + ' ' if hint else ''}the exercises are "
                       f"{', '.join(sorted(EXERCISES))}")
    return EXERCISES[id]


def check(id: str, answer: Any, **given: Any) -> Verdict:
    """Check the answer to exercise ``id``: recompute with the toolkit and compare.

    ``answer`` ``None`` (or ``...``) gives "not yet"; a wrong answer gives "wrong" with the
    reason; an answer the check cannot even read (wrong type or shape) is "wrong" too, never
    an exception.
    """
    task = get(id)
    missing = [name for name in task.given if name not in given]
    if missing:
        raise XaiError(f"check({id!r}, ...) needs {', '.join(missing)} as keyword "
                       f"arguments: check({id!r}, {task.answer}, "
                       + ", ".join(f"{n}={n}" for n in task.given) + ")")
    if answer is None or answer is Ellipsis:
        return task.not_yet()
    try:
        return task.verify(answer, **given)
    except Unreadable as error:
        return task.wrong(str(error))
    except (TypeError, ValueError, IndexError, RuntimeError, AttributeError, KeyError) as error:
        return task.wrong(f"the answer could not be used as asked ({type(error).__name__}: "
                          f"{error})")


@dataclass(frozen=True)
class Solution:
    """One solution: shows itself collapsed in a notebook (click to open), as code in a
    terminal. ``code`` is what the test suite puts in the exercise cell."""

    exercise: str
    title: str
    code: str

    def __repr__(self) -> str:
        return f"# solution of {self.exercise}: {self.title}\n{self.code}"

    def __str__(self) -> str:
        return self.code

    def _repr_html_(self) -> str:
        return (f"<details><summary>Solution of <code>{html.escape(self.exercise)}</code> "
                f"({html.escape(self.title)}): click to open</summary>"
                f"<pre>{html.escape(self.code)}</pre></details>")


def solution(id: str) -> Solution:
    """One solution of exercise ``id`` (collapsed in a notebook; ``str()`` is the code)."""
    task = get(id)
    return Solution(task.id, task.title, task.solution)


def exercises(notebook: str | None = None) -> list[Exercise]:
    """Every exercise, or those of one notebook (e.g. ``"02_cam_family"``), in order."""
    from . import _load_all

    _load_all()
    return [e for e in EXERCISES.values() if notebook is None or e.notebook == notebook]
