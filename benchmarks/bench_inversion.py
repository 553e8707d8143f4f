"""Speed of the inversion methods (issue 4), as ratios measured in one process.

    python -m benchmarks.bench_inversion [--quick] [--repeats 5] [--threads 1] [--clock cpu]

One optimisation *iteration* of each method is timed as the marginal cost of the kernel run
with ``T₂`` instead of ``T₁`` iterations (``(t(T₂) − t(T₁)) / (T₂ − T₁)``: the fixed costs —
the traced forward, the final forward, the capture — cancel), interleaved round by round with
its floor, one forward + backward (to the input) of the same model at the same batch, run
``T₂ − T₁`` times in a row (:mod:`.harness`, medians):

* ``feature_inversion`` on the embedded EfficientNet-Lite0 (real weights, two 224×224 photos,
  default layer): a step-1 iteration (forward stopped at the layer + backward) against the
  floor at batch N; a step-2 iteration (the kept and the removed blends: the model sees 2N
  images) against the floor at 2N (and at N, for the record);
* ``inverted_representation``, same model and photos, at the default layer and at
  ``blocks.3`` (the forward stops there), against the floor at N;
* ``layerwise_inverse`` on a VGG-11 (torchvision architecture, random weights: no download)
  at 112×112: one solver iteration at *every* layer against one forward + backward of the
  whole network at N;
* ``layerwise_inverse`` on a VGG-16 (random weights) at 224×224, one image, 2 iterations per
  layer (issue 9): the whole kernel and its parts (capture, the power iterations of the
  step sizes, the solves, re-identification) against its floor, the per-layer
  projected-gradient steps (2 × one forward + backward of the network); and when its
  progress reports (with a preview) arrive.

Also the iterations per second and the time to the paper's default number of iterations
(80 for feature inversion, 201 for the inverted representation; for the layer-wise inverse a
default run, which stops each layer when it has converged, and the bound of 3000 iterations
per layer). Results: ``benchmarks/results/inversion.md``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import torch

import xai_widgets as xw
from xai_widgets.kernels import _layerwise, get_method
from xai_widgets.kernels.layerwise_inverse import classifier_chain, reidentification, settings_of
from xai_widgets.kernels.spec import KernelContext
from xai_widgets.scope import eval_mode
from xai_widgets.trace import TraceSet

from . import harness

RESULTS = Path(__file__).resolve().parent / "results" / "inversion.md"
PACKAGES = ("torch", "torchvision", "timm")
LIMIT = 1.15


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations and rounds")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable on a shared machine)")
    parser.add_argument("--clock", default="cpu", choices=sorted(harness.CLOCKS))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated: fi,ir,lw,lw16")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 5)
    clock = harness.CLOCKS[args.clock]
    timed = partial(harness.interleaved, repeats=repeats, warmup=args.warmup, clock=clock)
    iterations = (1, 3) if args.quick else (2, 10)
    parts = set(filter(None, args.only.split(","))) or {"fi", "ir", "lw", "lw16"}

    bundle = xw.load_model()
    photos = xw.sample_images()
    names = ["chelsea", "coffee", "astronaut", "rocket"][:args.batch]
    inputs = bundle.prepare([photos[n] for n in names]).inputs
    bundle.layers  # noqa: B018 - the layer catalogue's dry run, once, before any timing
    sections = [f"# Inversion methods: speed ratios (issue 4)\n\n"
                f"{args.threads} torch thread(s), {args.clock} clock, {repeats} rounds after "
                f"{args.warmup} warm-up, medians; an iteration's cost is the marginal cost "
                f"between {iterations[0]} and {iterations[1]} iterations. Goal: ≤ {LIMIT}× one "
                f"forward+backward of the same model at the same batch. The machine may be shared: "
                f"ratios can move by about ±0.1 between runs. Command: `python -m "
                f"benchmarks.bench_inversion{' --quick' if args.quick else ''}`.\n",
                harness.machine_table(PACKAGES)]
    if "fi" in parts:
        sections.append(_feature_inversion(bundle, inputs, iterations, timed, clock))
    if "ir" in parts:
        sections.append(_inverted_representation(bundle, inputs, iterations, timed, clock))
    if "lw" in parts:
        sections.append(_layerwise_inverse(args.batch, iterations, timed, clock, args.quick))
    if "lw16" in parts:
        sections.append(_layerwise_vgg16(timed, clock, args.quick))
    report = "\n".join(sections)
    harness.publish(report, args.out)


# ---------------------------------------------------------------------------- plumbing


def _kernel(bundle: xw.ModelBundle, inputs: torch.Tensor, method: str, layer: str | None,
            **params: object) -> Callable[[], object]:
    """The kernel on a warm TraceSet (the Explorer's case: the base forward is cached)."""
    spec = get_method(method)
    traces = TraceSet(bundle, inputs, [layer] if layer else [], with_graph=spec.needs_gradient)
    trace = traces.get(spec.rules[0], [layer] if layer else [])
    targets = tuple(int(t) for t in trace.logits.argmax(1))
    values = spec.validate(params)
    return lambda: spec.compute(KernelContext(traces, targets, layer, values))


def _floor(model: torch.nn.Module, inputs: torch.Tensor, times: int) -> Callable[[], object]:
    """``times`` × (one forward with autograd and the backward to the input, top class of
    each image): as many passes as the iterations it is compared with, so that both cases
    last about as long and meet the same noise of a shared machine."""
    def run() -> object:
        with eval_mode(model):
            for _ in range(times):
                x = inputs.detach().clone().requires_grad_(True)
                logits = model(x)
                torch.autograd.grad(logits.max(1).values.sum(), x)
        return None
    return run


def _marginal(seconds: dict[str, list[float]], many: str, few: str, steps: int) -> float:
    return (harness.median(seconds[many]) - harness.median(seconds[few])) / steps


def _per_pass(seconds: dict[str, list[float]], floor: str, times: int) -> float:
    return harness.median(seconds[floor]) / times


def _once(run: Callable[[], object], clock: Callable[[], float]) -> float:
    start = clock()
    run()
    return clock() - start


def _rows(cases: list[tuple[str, float, float, str]]) -> str:
    rows: list[list[object]] = [
        [name, seconds, 1 / seconds, ratio, "yes" if ratio <= LIMIT else "**no**", note]
        for name, seconds, ratio, note in cases]
    return harness.markdown_table(
        ["iteration", "seconds", "iterations/s", "× floor", f"≤ {LIMIT}", "floor"], rows)


# ---------------------------------------------------------------------------- parts


def _feature_inversion(bundle: xw.ModelBundle, inputs: torch.Tensor,
                       iterations: tuple[int, int], timed: harness.Timed,
                       clock: Callable[[], float]) -> str:
    few, many = iterations
    layer = bundle.layers.default
    n = inputs.shape[0]
    run = partial(_kernel, bundle, inputs, "feature_inversion", layer)
    cases = {
        "step 1 (few)": run(iterations=few, step1_iterations=few),
        "step 1 (many)": run(iterations=many, step1_iterations=many),
        "step 2 (few)": run(iterations=1 + few, step1_iterations=1),
        "step 2 (many)": run(iterations=1 + many, step1_iterations=1),
        "floor N": _floor(bundle.model, inputs, many - few),
        "floor 2N": _floor(bundle.model, torch.cat([inputs, inputs]), many - few),
    }
    seconds = timed(cases)
    step1 = _marginal(seconds, "step 1 (many)", "step 1 (few)", many - few)
    step2 = _marginal(seconds, "step 2 (many)", "step 2 (few)", many - few)
    floor_n = _per_pass(seconds, "floor N", many - few)
    floor_2n = _per_pass(seconds, "floor 2N", many - few)
    default = _once(run(), clock)
    table = _rows([
        ("step 1", step1, step1 / floor_n, f"fwd+bwd at N = {n} ({floor_n:.3f} s)"),
        ("step 2", step2, step2 / floor_2n, f"fwd+bwd at 2N = {2 * n} ({floor_2n:.3f} s)"),
        ("step 2 (per image of N)", step2, step2 / floor_n, f"fwd+bwd at N = {n}"),
    ])
    return (f"## feature_inversion\n\nEmbedded {bundle.name}, {n} photos 224×224, layer "
            f"`{layer}` for the mask and the features. A step-2 iteration runs the kept and "
            f"the removed blends of every image together: the model sees 2N images, so its "
            f"floor is the forward+backward at 2N (the authors' code runs three passes per "
            f"iteration).\n\n{table}\n\nTime to the authors' 80 iterations (11 + 69) on "
            f"{n} images: **{default:.1f} s** (measured once, the trace and the final "
            f"forward included).\n")


def _inverted_representation(bundle: xw.ModelBundle, inputs: torch.Tensor,
                             iterations: tuple[int, int], timed: harness.Timed,
                             clock: Callable[[], float]) -> str:
    few, many = iterations
    n = inputs.shape[0]
    layers = (bundle.layers.default, "blocks.3")
    cases: dict[str, Callable[[], object]] = {
        "floor N": _floor(bundle.model, inputs, many - few)}
    for layer in layers:
        for label, count in (("few", few), ("many", many)):
            cases[f"{layer} ({label})"] = _kernel(bundle, inputs, "inverted_representation",
                                                  layer, iterations=count)
    seconds = timed(cases)
    floor = _per_pass(seconds, "floor N", many - few)
    rows = []
    for layer in layers:
        cost = _marginal(seconds, f"{layer} (many)", f"{layer} (few)", many - few)
        rows.append((f"layer {layer}", cost, cost / floor,
                     f"fwd+bwd at N = {n} ({floor:.3f} s)"))
    default = _once(_kernel(bundle, inputs, "inverted_representation", layers[0]), clock)
    return (f"## inverted_representation\n\nEmbedded {bundle.name}, {n} photos 224×224; the "
            f"forward stops at the layer.\n\n{_rows(rows)}\n\nTime to the original 201 "
            f"iterations at `{layers[0]}` on {n} images: **{default:.1f} s**.\n")


def _layerwise_inverse(batch: int, iterations: tuple[int, int], timed: harness.Timed,
                       clock: Callable[[], float], quick: bool) -> str:
    import torchvision

    few, many = iterations
    size = 64 if quick else 112
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None).eval()
    bundle = xw.ModelBundle(model, xw.Preprocessing(resize=None, crop=(size, size)),
                            name="vgg11 (random weights)")
    inputs = torch.randn(batch, 3, size, size)
    run = partial(_kernel, bundle, inputs, "layerwise_inverse", None, tolerance=0.0)
    seconds = timed({"few": run(max_iterations=few), "many": run(max_iterations=many),
                     "floor N": _floor(model, inputs, many - few)})
    cost = _marginal(seconds, "many", "few", many - few)
    floor = _per_pass(seconds, "floor N", many - few)
    table = _rows([("every layer once", cost, cost / floor,
                    f"fwd+bwd of the network at N = {batch} ({floor:.3f} s)")])
    spec = get_method("layerwise_inverse")
    traces = TraceSet(bundle, inputs, [], with_graph=False)
    targets = tuple(int(t) for t in traces.get().logits.argmax(1))
    start = clock()
    result = spec.compute(KernelContext(traces, targets, None, spec.defaults()))
    default = clock() - start
    used = result.extras["iterations"]
    solved = int((used.sum(0) > 0).sum())
    fixed = harness.median(seconds["few"]) - few * cost
    return (f"## layerwise_inverse\n\n{bundle.name} at {size}×{size}, {batch} images, every "
            f"layer solved by the same number of iterations (tolerance 0). An iteration of "
            f"the authors' GPA runs two forwards and two backwards of the layer.\n\n{table}\n\n"
            f"Fixed costs (capture, power iterations, re-identification, closed-form layers): "
            f"{fixed:.2f} s. A default run (λ = 0.7, each layer stops when converged, at most "
            f"3000 iterations): **{default:.1f} s**, {int(used.max(0).values.sum())} "
            f"iterations over the {solved} solved layers (mean "
            f"{float(used.float().sum(1).mean()) / max(solved, 1):.0f} per layer and image); "
            f"the bound of 3000 iterations at every layer would take "
            f"{fixed + 3000 * cost:.0f} s.\n")


def _layerwise_vgg16(timed: harness.Timed, clock: Callable[[], float],
                     quick: bool) -> str:
    import torchvision

    steps = 2
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    bundle = xw.ModelBundle(model, xw.Preprocessing(resize=None, crop=(224, 224)),
                            name="vgg16 (random weights)")
    inputs = torch.randn(1, 3, 224, 224)
    spec = get_method("layerwise_inverse")
    traces = TraceSet(bundle, inputs, [], with_graph=False)
    targets = tuple(int(t) for t in traces.get().logits.argmax(1))
    target_index = torch.tensor(targets)
    values = spec.validate({"max_iterations": steps, "tolerance": 0.0})
    settings = settings_of(values)
    chain = classifier_chain(model, inputs)
    constants: dict[int, float] = {}
    blocks = [i for i, unit in enumerate(chain.units) if unit.kind == "block"]

    def fill_constants() -> None:
        constants.clear()
        for i in blocks:
            constants[i] = _layerwise.lipschitz(chain.units[i], chain.units[i].inputs, 0)

    fill_constants()
    inverse = _layerwise.invert(chain, settings, targets=target_index,
                                lipschitz_cache=constants)
    cases: dict[str, Callable[[], object]] = {
        "kernel": lambda: spec.compute(KernelContext(traces, targets, None, values)),
        "capture": lambda: classifier_chain(model, inputs),
        "step sizes (power iterations)": fill_constants,
        f"solves ({steps} iterations per layer)": lambda: _layerwise.invert(
            chain, settings, targets=target_index, lipschitz_cache=constants),
        "re-identification": lambda: reidentification(chain, inverse, target_index),
        "floor": _floor(model, inputs, steps),
    }
    seconds = timed(cases)
    floor = harness.median(seconds["floor"])
    rows: list[list[object]] = [[name, harness.median(seconds[name]),
                                 harness.median(seconds[name]) / floor]
                                for name in cases if name != "floor"]
    table = harness.markdown_table(["part", "seconds", "× floor"], rows)

    def reports(params: Mapping[str, object]) -> tuple[float, float, float, float, float]:
        """Seconds to the first report, to the first picture preview, the longest gap
        between reports, the whole run, and how many reports."""
        times: list[tuple[float, bool]] = []
        start = clock()

        def progress(_fraction: float, preview: torch.Tensor | None) -> None:
            times.append((clock() - start, preview is not None))

        spec.compute(KernelContext(traces, targets, None, spec.validate(params), progress))
        total = clock() - start
        stamps = [0.0] + [t for t, _ in times]
        gap = max(b - a for a, b in itertools.pairwise(stamps))
        picture = next(t for t, shown in times if shown)
        return times[0][0], picture, gap, total, len(times)

    lines = []
    runs = [("2 iterations per layer", {"max_iterations": steps, "tolerance": 0.0})]
    if not quick:
        runs.append(("defaults (λ = 0.7, ≤ 3000 iterations, tolerance 1e-3)", {}))
    for label, params in runs:
        first, picture, gap, total, count = reports(params)
        lines.append(f"| {label} | {first:.1f} | {picture:.1f} | {gap:.1f} | {total:.1f} | "
                     f"{count} |")
    timeline = "\n".join(["| run | first report | first picture | longest gap | whole run | "
                          "reports |", "|---|---|---|---|---|---|", *lines])
    return (f"## layerwise_inverse on VGG-16 (issue 9)\n\n{bundle.name}, 224×224, one image, "
            f"{steps} iterations at every solved layer ({len(blocks)} blocks, "
            f"{len(chain)} units), the kernel on a warm TraceSet. Floor: the per-layer "
            f"projected-gradient steps, {steps} × one forward + backward of the network "
            f"({floor:.2f} s). The parts are timed alone (their sum is about the kernel).\n\n"
            f"{table}\n\nProgress (seconds of the clock above, measured once; a picture "
            f"preview needs a spatial layer, so the classifier's linear layers report "
            f"without one):\n\n{timeline}\n")


if __name__ == "__main__":
    time.perf_counter()
    main()
