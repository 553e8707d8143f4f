"""``make bench`` = ``python -m benchmarks``: the core benchmark (see benchmarks/README.md).

    python -m benchmarks                       # everything: 4 models × batch 1 and 8 (< 30 min)
    python -m benchmarks --quick               # resnet18, batch 1, few repeats (~2 min)
    python -m benchmarks --models resnet50 --batch 8 --skip gap
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from . import bench_core, bench_insecurities, gap, harness, memory, report
from .peers import available

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("resnet18", "resnet50", "vgg16", "densenet121")
PACKAGES = ("torch", "torchvision", "captum", "grad-cam", "torchcam")
PARTS = ("calls", "memory", "gap", "insecurities")


def _list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="resnet18 at batch 1, 3 rounds: a smoke run (~2 min)")
    parser.add_argument("--models", type=_list, default=None,
                        help=f"comma-separated torchvision names (default: {','.join(MODELS)})")
    parser.add_argument("--batch", type=lambda t: [int(b) for b in _list(t)], default=None,
                        help="comma-separated batch sizes (default: 1,8)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per group at most (default 9; --quick 3)")
    parser.add_argument("--min-repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds of timed rounds per group of one model and batch, "
                             "within [min-repeats, repeats] rounds (default 60)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--clock", choices=sorted(harness.CLOCKS), default="wall")
    parser.add_argument("--no-peers", action="store_true", help="ours and the floors only")
    parser.add_argument("--all-peers", action="store_true",
                        help="also at batch > 1 the peer methods that repeat the passes of "
                             "another of their library (Grad-CAM++ and LayerCAM)")
    parser.add_argument("--skip", type=_list, default=[], help=f"parts to skip: {PARTS}")
    parser.add_argument("--memory", default=None, metavar="MODEL,BATCH",
                        help="Grad-CAM peak memory setting (default resnet50,8; --quick: "
                             "the first model and batch)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results stem (default benchmarks/results/core, --quick: quick)")
    args = parser.parse_args(argv)
    args.models = args.models or (["resnet18"] if args.quick else list(MODELS))
    args.batch = args.batch or ([1] if args.quick else [1, 8])
    args.repeats = args.repeats or (3 if args.quick else 9)
    if args.memory is None:
        args.memory = f"{args.models[0]},{args.batch[0]}" if args.quick else "resnet50,8"
    args.out = args.out or RESULTS / ("quick" if args.quick else "core")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    settings = bench_core.Settings(repeats=args.repeats, min_repeats=min(args.min_repeats,
                                                                         args.repeats),
                                   calls_budget_s=args.budget,
                                   switches_budget_s=args.budget / 4,
                                   peers=not args.no_peers, clock=args.clock,
                                   all_peers_up_to=max(args.batch) if args.all_peers else 1)
    results = report.Results(
        machine={**harness.machine(PACKAGES), "torch threads": str(args.threads)},
        settings={"clock": args.clock, "rounds": f"{settings.min_repeats}–{settings.repeats}",
                  "budget per group": f"{args.budget:.0f} s", "input": "224×224, random",
                  "weights": "random (weights=None)"})
    peers = [] if args.no_peers else available()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {line}", flush=True)

    if "calls" not in args.skip:
        for model in args.models:
            for batch in args.batch:
                results.configs.append(bench_core.run_config(model, batch, peers, settings, log))
    if "memory" not in args.skip:
        model, batch = args.memory.split(",")
        log(f"peak memory of Grad-CAM, {model} ×{batch}, one process per library")
        results.memory = memory.run(model, int(batch), args.threads, not args.no_peers)
        results.memory_setting = f"{model} ×{batch}"
    if "gap" not in args.skip:
        log("guided backprop gaps")
        results.gaps = gap.run()
    if "insecurities" not in args.skip:
        log("insecurities (deliberative explanations): results/insecurities.md")
        bench_insecurities.main(["--repeats", str(args.repeats), "--threads", str(args.threads),
                                 "--clock", args.clock, *(["--quick"] if args.quick else [])])
    results.wall_s = time.perf_counter() - start
    print(report.write(results, args.out))
    log(f"written {args.out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
