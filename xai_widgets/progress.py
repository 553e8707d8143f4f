"""Progress bars for long Python calls, in a terminal and in a notebook (``tqdm.auto``).

Every call that can take more than a few seconds (an iterative method from ``explain``,
``Compare.metrics``, the folder evaluation, training) shows one, unless the caller passes
``progress=False``. The bar is driven by the toolkit's progress protocol,
``progress(fraction, preview)`` (:mod:`xai_widgets.jobs`); :func:`items_bar` counts the items
of a folder run instead, with the dashboard of its Dask cluster, if any.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .jobs import Progress

STEPS = 1000  # a fraction is shown in thousandths


@contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Progress | None]:
    """A ``progress(fraction, preview)`` callback that moves a tqdm bar (``None`` when not
    ``enabled``); the bar is closed on exit, whether the work ended or raised."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=STEPS, desc=description, leave=False,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

    def report(fraction: float, _preview: Any = None) -> None:
        bar.update(max(0, round(fraction * STEPS) - bar.n))

    try:
        yield report
    finally:
        bar.close()


def items_bar(description: str, total: int, enabled: bool = True, client: Any = None,
              unit: str = "image") -> Any:
    """A tqdm bar (text in a terminal, a widget in a notebook) over ``total`` items; with a
    Dask ``client`` that has a dashboard, its address is shown after the bar. Use it as a
    context manager; ``update(n)`` after ``n`` items."""
    from tqdm.auto import tqdm

    from .distributed import dashboard

    link = dashboard(client) if client is not None else None
    return tqdm(total=total, desc=description, unit=unit, disable=not enabled,
                postfix=f"dashboard {link}" if link else None)
