"""Timing and memory for the benchmarks, as ratios measured in one process.

The machine is shared and noisy, so absolute times mean little: every benchmark times a
method *and its floor* (the passes it cannot avoid) in the same process, interleaved round
by round after a warm-up, and reports the ratio of medians.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path


def interleaved(cases: Mapping[str, Callable[[], object]], repeats: int = 7,
                warmup: int = 2) -> dict[str, list[float]]:
    """Run every case ``warmup`` times, then ``repeats`` rounds in a rotating order;
    return the seconds of each run per case."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            start = time.perf_counter()
            cases[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio(seconds: Mapping[str, list[float]], case: str, floor: str) -> float:
    """Median time of ``case`` over median time of ``floor``."""
    return median(seconds[case]) / median(seconds[floor])


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def peak_memory(fn: Callable[[], object]) -> int:
    """Bytes by which the process's resident set rose at its peak while ``fn`` ran.

    Linux only: the peak (VmHWM) is reset through ``/proc/self/clear_refs`` first.
    """
    gc.collect()
    Path(f"/proc/{os.getpid()}/clear_refs").write_text("5")
    before = _status("VmRSS")
    fn()
    return _status("VmHWM") - before


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
