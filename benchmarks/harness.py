"""Timing and memory for the benchmarks, as ratios measured in one process.

The machine is shared and noisy, so absolute times mean little: every benchmark times a
method *and its floor* (the passes it cannot avoid) in the same process, interleaved round
by round after a warm-up, and reports the ratio of medians.
"""

from __future__ import annotations

import datetime
import gc
import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

#: Clocks: wall time, or the CPU time of the whole process (all its threads), which moves
#: less when other processes share the cores.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


#: :func:`interleaved` with its rounds and clock bound: the cases by name -> their seconds
Timed = Callable[[Mapping[str, Callable[[], object]]], dict[str, list[float]]]


def interleaved(cases: Mapping[str, Callable[[], object]], repeats: int = 7,
                warmup: int = 2, setups: Mapping[str, Callable[[], object]] | None = None,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Run every case ``warmup`` times, then ``repeats`` rounds in a rotating order; return
    the seconds of each run per case.

    ``setups``: untimed preparation run right before each run of a case (e.g. a new class
    whose first pass is not what is measured).
    """
    names = list(cases)
    setups = setups or {}

    def run(name: str) -> float:
        if name in setups:
            setups[name]()
        gc.collect()
        start = clock()
        cases[name]()
        return clock() - start

    for _ in range(warmup):
        for name in names:
            run(name)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(run(name))
    return seconds


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(seconds: Mapping[str, list[float]], case: str, floor: str) -> float:
    """Median time of ``case`` over median time of ``floor``."""
    return median(seconds[case]) / median(seconds[floor])


def paired_ratio(seconds: Mapping[str, list[float]], case: str, floor: str) -> float:
    """Median over rounds of the case's time over its floor's in the same round: less
    sensitive than :func:`ratio` to a load that changes from round to round."""
    return median([c / f for c, f in zip(seconds[case], seconds[floor], strict=True)])


def spread(values: Sequence[float]) -> float:
    """Half the interquartile range over the median: the noise of one case, relative."""
    if len(values) < 2:
        return 0.0
    low, _, high = statistics.quantiles(values, n=4, method="inclusive")
    return (high - low) / 2 / statistics.median(values)


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


def machine(packages: Sequence[str] = ()) -> dict[str, str]:
    """What the numbers were measured on: CPU model, cores, library versions, date."""
    cpu = next((line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    for package in packages:
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def machine_table(packages: Sequence[str] = ()) -> str:
    """:func:`machine` as a two-column Markdown table."""
    return markdown_table(["", ""], [[k, v] for k, v in machine(packages).items()]) + "\n"


def publish(report: str, out: str | Path) -> None:
    """Write a Markdown report to ``out`` (folders made as needed) and print it."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(report)
    print(report)
