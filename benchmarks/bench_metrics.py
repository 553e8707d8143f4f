"""Deletion + insertion speed and memory (issue 6), as ratios measured in one process.

    python -m benchmarks.bench_metrics [--model efficientnet_lite0] [--repeats 3]

One 224×224 photo, one map, RISE's protocol (224 pixels per step: 224 steps, 225 points per
curve; deletion to zeros, insertion from the blurred image). Cases, interleaved round by
round (:mod:`.harness`):

``ours``            ``xai_widgets.metrics.deletion_insertion``: 1 + 2·224 = 449 inputs;
``floor``           the model's forward on 449 ready inputs in the same chunks (the image,
                    then chunks of ``--chunk``) under ``torch.inference_mode()``;
``loop``            the one-step-at-a-time loop of the RISE code (re-implemented here, batch
                    1, in-place edits): 2·225 = 450 forwards;
``torchcam``        ``torchcam.metrics.DeletionInsertionMetric`` (steps = 224, the same chunk
                    size; one zero baseline for both curves, and its own Grad-CAM);
``torchcam floor``  its passes: forward + backward of the image, then its 447 inputs;
``ours (zeros)``    ours on torch-cam's protocol (zeros for both curves: 448 inputs), with
                    the Grad-CAM it ranks by (``explain``), for a like-for-like ratio.

Memory: the peak resident set of ``ours`` at three chunk sizes and two step counts: it grows
with the chunk, not with the number of steps.

Chunk sweep (``--sweep``, models; ``--sweep ""`` skips it): the forward time per input at
batch sizes 1 to 32, the batch sizes interleaved round by round, for the default ``chunk_size``.
Results: ``benchmarks/results/metrics.md``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

import xai_widgets as xw
from xai_widgets import metrics
from xai_widgets.metrics import forward
from xai_widgets.models import EMBEDDED
from xai_widgets.scope import eval_mode

from . import harness

RESULTS = Path(__file__).resolve().parent / "results" / "metrics.md"
STEP = 224
TARGET = 1.03
BATCHES = (1, 2, 4, 8, 16, 32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="default: the embedded model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=None,
                        help="default: the library's default for the model's device")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable on a shared machine)")
    parser.add_argument("--clock", default="cpu", choices=sorted(harness.CLOCKS))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--sweep", default="efficientnet_lite0,resnet18,resnet50",
                        help="models of the chunk sweep, comma-separated (weights=None but "
                             "the embedded model)")
    parser.add_argument("--sweep-inputs", type=int, default=32)
    parser.add_argument("--probe", default=None, metavar="CHUNK,STEP",
                        help="(internal) print the peak memory of one run, in MiB")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = harness.CLOCKS[args.clock]
    bundle = xw.load_model(args.model, weights="default" if args.model is None else None)
    photo = bundle.prepare(xw.sample_images()["chelsea"]).inputs
    explanation = xw.explain(bundle, photo, "grad_cam")
    args.chunk = args.chunk or forward.default_chunk_size(bundle.device)
    if args.probe:
        chunk, step = (int(v) for v in args.probe.split(","))
        run = partial(metrics.deletion_insertion, explanation, photo, pixels_per_step=step,
                      chunk_size=chunk)
        print(run().forwards, harness.peak_memory(run) / 2**20)
        return
    memory = _memory(args)
    sweep = [_sweep(name, args.sweep_inputs, args.repeats, clock)
             for name in args.sweep.split(",") if name]
    cases, inputs = _cases(bundle, photo, explanation, args.chunk)
    seconds = harness.interleaved(cases, repeats=args.repeats, warmup=args.warmup,
                                  clock=clock)
    report = _report(seconds, memory, sweep, inputs, bundle.name, args)
    harness.publish(report, args.out)


def _cases(bundle: xw.ModelBundle, photo: torch.Tensor, explanation: xw.Explanation,
           chunk: int) -> tuple[dict[str, Callable[[], object]], dict[str, int]]:
    target = explanation.targets[0]
    ours = partial(metrics.deletion_insertion, explanation, photo, pixels_per_step=STEP,
                   chunk_size=chunk)
    probe = ours()
    steps = probe.deletion.scores.shape[1] - 1
    inputs = {"ours": probe.forwards, "loop": 2 * (steps + 1)}

    def ours_zeros() -> metrics.DeletionInsertion:
        e = xw.explain(bundle, photo, "grad_cam", target=target)
        return metrics.deletion_insertion(e, photo, pixels_per_step=STEP, chunk_size=chunk,
                                           insertion_substrate="zeros")

    inputs["ours (zeros)"] = ours_zeros().forwards
    cases: dict[str, Callable[[], object]] = {
        "ours": ours,
        "floor": partial(_forwards, bundle, photo, [1, probe.forwards - 1], chunk),
        "loop": partial(_loop, bundle, photo, explanation, target, steps),
        "ours (zeros)": ours_zeros,
    }
    peer = _torchcam(bundle, photo, explanation, target, chunk)
    if peer is not None:
        cases["torchcam"] = peer
        inputs["torchcam"] = 1 + (2 * steps - 1)
        cases["torchcam floor"] = partial(_forward_backward_then, bundle, photo, target,
                                          2 * steps - 1, chunk)
    return cases, inputs


def _forwards(bundle: xw.ModelBundle, photo: torch.Tensor, counts: list[int],
              chunk: int) -> None:
    """The floor: forwards of ``counts`` ready inputs, each group in chunks of ``chunk``."""
    ready = photo.expand(chunk, -1, -1, -1).contiguous()
    with torch.inference_mode(), eval_mode(bundle.model):
        for count in counts:
            for start in range(0, count, chunk):
                bundle.model(ready[:min(chunk, count - start)]).softmax(dim=1)


def _forward_backward_then(bundle: xw.ModelBundle, photo: torch.Tensor, target: int,
                           count: int, chunk: int) -> None:
    """torch-cam's floor: forward + backward of the image, then ``count`` forwards."""
    with eval_mode(bundle.model):
        x = photo.clone().requires_grad_(True)
        torch.autograd.grad(bundle.model(x)[0, target], x)
    _forwards(bundle, photo, [count], chunk)


def _loop(bundle: xw.ModelBundle, photo: torch.Tensor, explanation: xw.Explanation,
          target: int, steps: int) -> list[float]:
    """The RISE code's way: one input at a time, the next pixels copied in place."""
    height, width = photo.shape[-2:]
    saliency = F.interpolate(explanation.map[:, None].float(), size=(height, width),
                             mode="bilinear", align_corners=False).flatten()
    order = torch.argsort(saliency, descending=True)
    blurred = metrics.gaussian_blur(photo)
    scores = []
    with torch.inference_mode(), eval_mode(bundle.model):
        for start, finish in ((photo, torch.zeros_like(photo)), (blurred, photo)):
            current = start.clone()
            for i in range(steps + 1):
                scores.append(float(bundle.model(current).softmax(dim=1)[0, target]))
                pixels = order[i * STEP:(i + 1) * STEP]
                current.view(1, 3, -1)[:, :, pixels] = finish.view(1, 3, -1)[:, :, pixels]
    return scores


def _torchcam(bundle: xw.ModelBundle, photo: torch.Tensor, explanation: xw.Explanation,
              target: int, chunk: int) -> Callable[[], object] | None:
    try:
        from torchcam.methods import GradCAM
        from torchcam.metrics import DeletionInsertionMetric
    except ImportError:
        return None
    def run() -> object:
        extractor = GradCAM(bundle.model, target_layer=explanation.layer)
        try:
            metric = DeletionInsertionMetric(extractor, partial(torch.softmax, dim=-1),
                                             steps=STEP, batch_size=chunk)
            metric.update(photo, class_idx=target)
            return metric.summary()
        finally:
            extractor.remove_hooks()

    return run


def _sweep(name: str, inputs: int, repeats: int, clock: Callable[[], float]) -> list[str]:
    """One row: ``name``'s forward time per input (ms) at each of :data:`BATCHES`, its ratio
    to batch 1's, and the page faults per input at batches 1, 8 and 32 (one untimed run
    each, after the timed ones)."""
    torch.manual_seed(0)
    bundle = xw.load_model(name, weights="default" if name == EMBEDDED else None)
    photo = bundle.prepare(xw.sample_images()["chelsea"]).inputs
    cases = {str(b): partial(_forwards, bundle, photo, [inputs], b) for b in BATCHES}
    seconds = harness.interleaved(cases, repeats=repeats, warmup=1, clock=clock)
    faults = []
    for batch in (1, 8, 32):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        cases[str(batch)]()
        faults.append(str((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
                          // inputs))
    return [name] + [f"{1000 * harness.median(seconds[str(b)]) / inputs:.1f} "
                     f"({harness.paired_ratio(seconds, str(b), '1'):.2f})" for b in BATCHES] \
        + [" / ".join(faults)]


def _memory(args: argparse.Namespace) -> list[tuple[int, int, int, float]]:
    """Peak resident-set growth of ``ours`` per (chunk size, pixels per step), in MiB, each
    in a fresh process (an allocator keeps what earlier runs freed)."""
    rows = []
    for chunk, step in ((args.chunk, STEP), (args.chunk, 4 * STEP), (8, STEP), (32, STEP)):
        command = [sys.executable, "-m", "benchmarks.bench_metrics", "--probe",
                   f"{chunk},{step}", "--threads", str(args.threads)]
        if args.model:
            command += ["--model", args.model]
        printed = subprocess.run(command, check=True, capture_output=True, text=True,
                                 cwd=Path(__file__).resolve().parent.parent).stdout.split()
        rows.append((chunk, step, int(printed[-2]), float(printed[-1])))
    return rows


def _report(seconds: dict[str, list[float]], memory: list[tuple[int, int, int, float]],
            sweep: list[list[str]], inputs: dict[str, int], model: str,
            args: argparse.Namespace) -> str:
    def row(case: str, floor: str, note: str) -> list[object]:
        return [case, inputs.get(case, ""), f"{harness.median(seconds[case]):.2f}",
                floor, f"{harness.ratio(seconds, case, floor):.3f}",
                f"±{harness.spread(seconds[case]):.1%}", note]

    rows = [row("ours", "floor", f"target ≤ {TARGET}"),
            row("loop", "ours", "speed-up of ours over the one-at-a-time loop")]
    if "torchcam" in seconds:
        rows += [row("torchcam", "torchcam floor", "torch-cam at its own floor"),
                 row("ours (zeros)", "torchcam floor", "ours on torch-cam's protocol"),
                 row("torchcam", "ours (zeros)", "torch-cam over ours, same protocol")]
    info = harness.machine(["torch", "torchcam"])
    lines = [
        "# Deletion + insertion (issue 6)",
        "",
        f"`python -m benchmarks.bench_metrics` — model `{model}`, one 224×224 photo, "
        f"{STEP} pixels per step, chunks of {args.chunk}, {args.threads} torch thread(s), "
        f"{args.clock} clock, median of {args.repeats} interleaved rounds after "
        f"{args.warmup} warm-up.",
        "",
        harness.markdown_table(["case", "inputs", "seconds", "over", "ratio", "noise", "note"],
                               rows),
        "",
        "Peak memory of `ours` (resident-set growth): bounded by the chunk size, whatever "
        "the number of steps.",
        "",
        harness.markdown_table(
            ["chunk", "pixels per step", "inputs", "peak MiB"],
            [[c, s, n, f"{m:.0f}"] for c, s, n, m in memory]),
        "",
    ]
    if sweep:
        lines += [
            f"Forward time per input in ms under `torch.inference_mode()` at each batch size "
            f"({args.sweep_inputs} inputs per run, the batch sizes interleaved, median of "
            f"{args.repeats} rounds; in brackets: over batch 1, paired by round). "
            "Models other than the embedded one have random weights. A larger batch saves "
            "arithmetic per input, but on a CPU its activations (tens of MiB) are mapped "
            "afresh for every chunk by glibc's allocator and returned after it: the page "
            "faults (system time, counted by the cpu clock) eat the saving.",
            "",
            harness.markdown_table(["model", *(f"batch {b}" for b in BATCHES),
                                    "page faults per input at 1 / 8 / 32"], sweep),
            "",
        ]
    lines += [
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
    ]
    ours = statistics.median(seconds["ours"]) / statistics.median(seconds["floor"])
    loop = statistics.median(seconds["loop"]) / statistics.median(seconds["ours"])
    lines.append(f"Verdict: ours at {ours:.3f}× its floor "
                 f"({'within' if ours <= TARGET else 'ABOVE'} the {TARGET}× target), "
                 f"{'faster' if loop > 1 else 'no faster'} than the one-at-a-time loop "
                 f"(loop / ours = {loop:.2f}).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
