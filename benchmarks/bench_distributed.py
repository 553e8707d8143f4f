"""Throughput of a folder evaluation on Dask workers, against the single-process runner.

    python -m benchmarks.bench_distributed [--images 16] [--repeats 3] [--workers 1,2]

The workload is ``metrics.evaluate_folder`` (the heaviest user of the folder runner): Grad-CAM
and deletion + insertion of every image of a folder of random 112×112 photos, on a ResNet-18
drawn at random (seeded), ``pixels_per_step`` giving 20 steps per curve (41 model inputs per
image), the default task size (4 images). Cases, interleaved round by round
(:func:`.harness.interleaved`, wall clock: the work runs in other processes):

``single``          ``evaluate_folder`` in this process, one torch thread (as a worker has);
``N workers``       ``client=`` a ``LocalCluster`` of N single-threaded worker processes (each
                    cluster started once, before the rounds; every run ships the model to the
                    workers again, as a real run does).

Engine overhead: ``(1 worker − single) / single``, the whole cost of the engine on one worker
(sending the model and the tasks, the results back, ordering); and the round trip of an empty
task of 4 items, against the work of a task of 4 images. Results:
``benchmarks/results/distributed.md``; the machine's load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.models import resnet18

from xai_widgets import distributed, metrics
from xai_widgets.images import Preprocessing
from xai_widgets.models import ModelBundle

from . import harness

RESULTS = Path(__file__).resolve().parent / "results" / "distributed.md"
SIZE = 112
TASK_SIZE = 4
SETTINGS: dict[str, Any] = {"methods": ["grad_cam"], "metrics": ["deletion", "insertion"],
            "pixels_per_step": SIZE * SIZE // 20, "progress": False, "plots": False}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--workers", default="1,2", help="cluster sizes, comma-separated")
    parser.add_argument("--empty-tasks", type=int, default=200)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.workers.split(",")]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    bundle = ModelBundle(resnet18(num_classes=10).eval(), Preprocessing(resize=None,
                                                                         crop=(SIZE, SIZE)))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        folder = _photos(Path(scratch) / "images", args.images)
        clients = {n: stack.enter_context(distributed.local_client(workers=n)) for n in sizes}
        runs = iter(range(1 << 30))

        def evaluate(client: Any = None) -> None:
            out = Path(scratch) / f"run{next(runs)}.jsonl"
            metrics.evaluate_folder(folder, bundle, out=out, client=client,
                                    task_size=TASK_SIZE, **SETTINGS)

        cases = {"single": evaluate} | {_name(n): partial(evaluate, clients[n]) for n in sizes}
        seconds = harness.interleaved(cases, repeats=args.repeats, warmup=args.warmup)
        empty = _empty_task_seconds(clients[sizes[0]], args.empty_tasks)
    load_after = os.getloadavg()
    harness.publish(_report(args, seconds, sizes, empty, load_before, load_after), args.out)


def _name(workers: int) -> str:
    return f"{workers} worker{'s' if workers > 1 else ''}"


def _photos(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(
            folder / f"{i:04d}.png")
    return folder


def _nothing(_state: Any, chunk: list[int]) -> list[None]:
    return [None] * len(chunk)


def _empty_task_seconds(client: Any, tasks: int) -> float:
    """Seconds per task of the engine alone: ``tasks`` tasks of 4 items that do nothing."""
    items = list(range(tasks * TASK_SIZE))
    list(distributed.run(items[:TASK_SIZE], dict, _nothing, client=client))  # warm
    start = time.perf_counter()
    list(distributed.run(items, dict, _nothing, client=client, task_size=TASK_SIZE))
    return (time.perf_counter() - start) / tasks


def _report(args: argparse.Namespace, seconds: dict[str, list[float]], sizes: list[int],
            empty: float, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    median = {name: statistics.median(times) for name, times in seconds.items()}
    single = median["single"]
    rows = [[name, f"{median[name]:.2f} ± {harness.spread(times) * 100:.0f} %",
             f"{args.images / median[name]:.2f}", f"{single / median[name]:.2f}",
             f"{harness.paired_ratio(seconds, 'single', name):.2f}"]
            for name, times in seconds.items()]
    task_work = single / args.images * TASK_SIZE
    one = _name(sizes[0])
    lines = [
        "# Folder evaluation on Dask workers", "",
        f"`python -m benchmarks.bench_distributed --images {args.images} --repeats "
        f"{args.repeats} --workers {args.workers}`: {args.images} random {SIZE}×{SIZE} photos, "
        f"ResNet-18 (random weights), Grad-CAM + deletion + insertion, "
        f"{SETTINGS['pixels_per_step']} pixels per step (20 steps), task size {TASK_SIZE}; "
        f"{args.repeats} interleaved rounds after {args.warmup} warm-up, wall clock.", "",
        harness.markdown_table(
            ["case", "median s (± half IQR)", "images/s", "speed-up vs single",
             "paired speed-up"], rows), "",
        f"- Engine overhead on {one}: ({one} − single) / single = "
        f"{(median[one] - single) / single * 100:+.1f} % of the work (sending the model "
        "to the worker once per run, the tasks, the records back, the ordering).",
        f"- An empty task of {TASK_SIZE} items: {empty * 1000:.1f} ms round trip on {one}, "
        f"{empty / task_work * 100:.2f} % of a task of {TASK_SIZE} images here "
        f"({task_work:.2f} s of work).",
    ]
    if len(sizes) > 1:
        many = _name(sizes[-1])
        lines.append(f"- {many} / {one}: {median[one] / median[many]:.2f}× the throughput "
                     f"(paired {harness.paired_ratio(seconds, one, many):.2f}×).")
    lines += ["", f"Load average (1, 5, 15 min) before: "
              f"{', '.join(f'{v:.2f}' for v in load_before)}; after: "
              f"{', '.join(f'{v:.2f}' for v in load_after)} (other jobs share the cores).", "",
              harness.machine_table(["torch", "distributed"])]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
