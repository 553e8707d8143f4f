"""Speed of the iterative attribution methods (issue 5), as ratios measured in one process.

    python -m benchmarks.bench_attribution [--quick] [--repeats 5] [--threads 1] [--clock cpu]

The embedded EfficientNet-Lite0 (real weights, offline) on one 224×224 photo. Every method is
timed with its *floor*, the passes it cannot avoid, and with the peer libraries where they
have the method, interleaved round by round (:mod:`.harness`); the tables give the ratios of
medians; "× floor (paired)" is the median over rounds of the ratio within a round (robust to
the drift of a shared machine), "× (medians)" the ratio of the medians. "ours" calls the
kernel on the batch's cached trace, as the Explorer does (the base forward that resolved the
class is not paid again); "ours (explain)" is the one-call API, base forward included.

* chunk sweep: seconds per input of forward+backward and of forward alone at several chunk
  sizes (how the default ``chunk_size`` was picked);
* ``integrated_gradients``: floor = ``n_steps`` forward+backward passes in the same chunks;
  captum ``IntegratedGradients`` with the same steps, rule and ``internal_batch_size``;
* ``smoothgrad`` (saliency): floor = ``n_samples`` forward+backward passes in the same chunks;
  captum ``NoiseTunnel(Saliency)`` with the same samples and ``nt_samples_batch_size``;
* ``rise``: floor = ``n_masks`` forwards of ready inputs at the same batch;
* ``score_cam``: floor = one forward + one forward per channel at the same batch;
  pytorch-grad-cam ``ScoreCAM`` and torch-cam ``ScoreCAM`` with the same batch; and capped at
  the top-K channels (``max_channels``), floor one forward + K;
* ``gradient_hessian``: floor = one forward+backward (to the input) of the photo.

Results: ``benchmarks/results/attribution.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

import xai_widgets as xw
from xai_widgets.kernels import get_method
from xai_widgets.kernels.spec import KernelContext
from xai_widgets.scope import eval_mode
from xai_widgets.trace import TraceSet

from . import harness

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's progress bars

RESULTS = Path(__file__).resolve().parent / "results" / "attribution.md"
PACKAGES = ("torch", "timm", "captum", "grad-cam", "torchcam")
TARGET = 281  # tabby


@dataclass(frozen=True)
class Sizes:
    """How much work each timed method does: integrated-gradients steps, SmoothGrad samples,
    RISE masks; ``chunk`` and ``batch`` are the methods' default chunk_size, the fastest per
    input on this CPU."""

    steps: int = 50
    samples: int = 32
    masks: int = 128
    chunk: int = 8
    batch: int = 8


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable on a shared machine)")
    parser.add_argument("--clock", default="cpu", choices=sorted(harness.CLOCKS))
    parser.add_argument("--only", default="",
                        help="comma-separated parts: sweep,ig,smoothgrad,rise,score_cam,2ndg")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 5)
    bundle = xw.load_model()
    photo = bundle.prepare(xw.sample_images()["chelsea"]).inputs
    bundle.layers  # noqa: B018 - the layer catalogue's dry run, once, before any timing
    clock = harness.CLOCKS[args.clock]
    size = Sizes(steps=16, samples=8, masks=64) if args.quick else Sizes()
    parts = set(filter(None, args.only.split(","))) or {
        "sweep", "ig", "smoothgrad", "rise", "score_cam", "2ndg"}
    sections = [f"# Attribution methods: speed ratios (issue 5)\n\n"
                f"Embedded {bundle.name}, one 224×224 photo, class {TARGET}; "
                f"{args.threads} torch thread(s), {args.clock} clock, {repeats} rounds after "
                f"{args.warmup} warm-up, cases interleaved within each round; ratios are "
                "medians over rounds of the ratio to the floor in the same round. Command: "
                f"`python -m benchmarks.bench_attribution {' '.join(argv or sys.argv[1:])}`."
                "\n",
                harness.machine_table(PACKAGES)]
    timed = partial(_timed, repeats=repeats, warmup=args.warmup, clock=clock)
    if "sweep" in parts:
        sections.append(_sweep(bundle, photo, clock, quick=args.quick))
    if "ig" in parts:
        sections.append(_integrated_gradients(bundle, photo, size, timed))
    if "smoothgrad" in parts:
        sections.append(_smoothgrad(bundle, photo, size, timed))
    if "rise" in parts:
        sections.append(_rise(bundle, photo, size, timed))
    if "score_cam" in parts:
        sections.append(_score_cam(bundle, photo, size, timed))
    if "2ndg" in parts:
        sections.append(_gradient_hessian(bundle, photo, timed))
    report = "\n".join(sections)
    harness.publish(report, args.out)


# ---------------------------------------------------------------------------- plumbing


def _timed(cases: Mapping[str, Callable[[], object]], *, repeats: int, warmup: int,
           clock: Callable[[], float]) -> dict[str, list[float]]:
    return harness.interleaved(cases, repeats=repeats, warmup=warmup, clock=clock)


def _paired(seconds: dict[str, list[float]], case: str, floor: str) -> float:
    """Median over rounds of ``case / floor`` within the round (the two ran back to back, so
    a slow drift of the shared machine cancels)."""
    return harness.median([a / b for a, b in zip(seconds[case], seconds[floor], strict=True)])


def _table(seconds: dict[str, list[float]], floor: str, notes: dict[str, str]) -> str:
    rows = [[name, harness.median(values), _paired(seconds, name, floor),
             harness.ratio(seconds, name, floor), f"±{100 * harness.spread(values):.0f}%",
             notes.get(name, "")]
            for name, values in seconds.items()]
    return harness.markdown_table(["case", "seconds", f"× {floor} (paired)",
                                   "× (medians)", "spread", "what"], rows)


def _kernel(bundle: xw.ModelBundle, photo: torch.Tensor, method: str,
            params: Mapping[str, object], layer: str | None = None) -> Callable[[], object]:
    """The kernel on a warm TraceSet (the Explorer's case: the base forward is cached)."""
    spec = get_method(method)
    traces = TraceSet(bundle, photo, [layer] if layer else [], with_graph=spec.needs_gradient)
    traces.get(spec.rules[0], [layer] if layer else [])
    values = spec.validate(params)
    return lambda: spec.compute(KernelContext(traces, (TARGET,), layer, values))


def _explain(bundle: xw.ModelBundle, photo: torch.Tensor, method: str,
             **params: Any) -> Callable[[], object]:
    return lambda: xw.explain(bundle, photo, method, target=TARGET, **params)


def _forward_backward(bundle: xw.ModelBundle, inputs: torch.Tensor, count: int,
                      chunk: int) -> None:
    """``count`` forward+backward passes (gradient at the input) in chunks of ``chunk``."""
    model = bundle.model
    with eval_mode(model):
        for start in range(0, count, chunk):
            x = inputs[:min(chunk, count - start)].clone().requires_grad_(True)
            torch.autograd.grad(model(x)[:, TARGET].sum(), x)


def _forwards(bundle: xw.ModelBundle, inputs: torch.Tensor, count: int, chunk: int) -> None:
    """``count`` forwards of ready inputs in chunks of ``chunk`` under inference mode."""
    with torch.inference_mode(), eval_mode(bundle.model):
        for start in range(0, count, chunk):
            bundle.model(inputs[:min(chunk, count - start)]).softmax(dim=1)


def _ready(photo: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` distinct inputs shaped like the photo (the floor's data)."""
    g = torch.Generator().manual_seed(seed)
    return photo + 0.1 * torch.randn(count, *photo.shape[1:], generator=g)


def _peer(name: str) -> Any:
    with contextlib.suppress(ImportError):
        if name == "captum":
            import captum.attr
            return captum.attr
        if name == "grad-cam":
            import pytorch_grad_cam
            return pytorch_grad_cam
        if name == "torchcam":
            import torchcam.methods
            return torchcam.methods
    return None


# ---------------------------------------------------------------------------- parts


def _sweep(bundle: xw.ModelBundle, photo: torch.Tensor, clock: Callable[[], float],
           quick: bool) -> str:
    chunks = (1, 8, 16, 32) if quick else (1, 4, 8, 16, 32, 64)
    total = 32
    inputs = _ready(photo, max(chunks))
    rows = []
    for chunk in chunks:
        per_input = []
        for run in (_forward_backward, _forwards):
            run(bundle, inputs, chunk, chunk)  # warm-up at this batch size
            times = []
            for _ in range(3):
                start = clock()
                run(bundle, inputs, total, chunk)
                times.append((clock() - start) / total)
            per_input.append(harness.median(times))
        rows.append([chunk, per_input[0], per_input[1]])
    best = min(rows, key=lambda r: r[1])[0], min(rows, key=lambda r: r[2])[0]
    return ("## Chunk size\n\nSeconds per input (median of 3 runs of " + str(total)
            + " inputs) at each chunk "
            f"size (best here: {best[0]} for forward+backward, {best[1]} for forwards).\n\n"
            + harness.markdown_table(["chunk", "fwd+bwd s/input", "fwd s/input"], rows)
            + "\n")


def _integrated_gradients(bundle: xw.ModelBundle, photo: torch.Tensor, size: Sizes,
                          timed: harness.Timed) -> str:
    steps, chunk = size.steps, size.chunk
    params = {"n_steps": steps, "chunk_size": chunk, "quadrature": "riemann_right"}
    baseline = bundle.preprocessing.normalise(torch.zeros_like(photo))
    path = torch.linspace(1 / steps, 1, steps).view(-1, 1, 1, 1) * (photo - baseline) + baseline
    cases: dict[str, Callable[[], object]] = {
        "floor": partial(_forward_backward, bundle, path, steps, chunk),
        "ours": _kernel(bundle, photo, "integrated_gradients", params),
        "ours (explain)": _explain(bundle, photo, "integrated_gradients", **params),
    }
    notes = {"floor": f"{steps} × forward+backward, chunks of {chunk}",
             "ours": "kernel, cached base trace: + 1 forward of the baseline (completeness)",
             "ours (explain)": "+ the base forward"}
    captum = _peer("captum")
    if captum is not None:
        ig = captum.IntegratedGradients(bundle.model)

        def peer() -> object:
            with eval_mode(bundle.model):
                return ig.attribute(photo, baseline, target=TARGET, n_steps=steps,
                                    method="riemann_right", internal_batch_size=chunk)

        def peer_with_delta() -> object:
            with eval_mode(bundle.model):
                return ig.attribute(photo, baseline, target=TARGET, n_steps=steps,
                                    method="riemann_right", internal_batch_size=chunk,
                                    return_convergence_delta=True)

        cases["captum"] = peer
        notes["captum"] = "IntegratedGradients, same steps, rule and internal_batch_size"
        cases["captum + delta"] = peer_with_delta
        notes["captum + delta"] = "the same with return_convergence_delta=True (ours always " \
                                  "reports it)"
    seconds = timed(cases)
    return (f"## integrated_gradients\n\n{steps} steps (right Riemann), black baseline, chunk "
            f"{chunk}. Target: ≤ 1.03× the floor, no slower than captum.\n\n"
            + _table(seconds, "floor", notes) + "\n")


def _smoothgrad(bundle: xw.ModelBundle, photo: torch.Tensor, size: Sizes,
                timed: harness.Timed) -> str:
    samples, chunk, level = size.samples, size.chunk, 0.15
    params = {"n_samples": samples, "chunk_size": chunk, "noise_level": level}
    stdev = level * float(photo.max() - photo.min())
    cases: dict[str, Callable[[], object]] = {
        "floor": partial(_forward_backward, bundle, _ready(photo, samples), samples, chunk),
        "ours": _kernel(bundle, photo, "smoothgrad", params),
        "ours (explain)": _explain(bundle, photo, "smoothgrad", **params),
    }
    notes = {"floor": f"{samples} × forward+backward, chunks of {chunk}",
             "ours": "kernel (saliency on each noisy chunk via a TraceSet)",
             "ours (explain)": "+ the base forward"}
    captum = _peer("captum")
    if captum is not None:
        tunnel = captum.NoiseTunnel(captum.Saliency(bundle.model))

        def peer() -> object:
            with eval_mode(bundle.model):
                return tunnel.attribute(photo, nt_type="smoothgrad", nt_samples=samples,
                                        nt_samples_batch_size=chunk, stdevs=stdev,
                                        target=TARGET, abs=False)

        cases["captum"] = peer
        notes["captum"] = "NoiseTunnel(Saliency), same samples and batch"
    seconds = timed(cases)
    return (f"## smoothgrad\n\n{samples} noisy samples (σ = {level} of the range), saliency, "
            f"chunk {chunk}. Target: ≤ 1.03× the floor, no slower than captum.\n\n"
            + _table(seconds, "floor", notes) + "\n")


def _rise(bundle: xw.ModelBundle, photo: torch.Tensor, size: Sizes,
          timed: harness.Timed) -> str:
    masks, batch = size.masks, size.batch
    params = {"n_masks": masks, "chunk_size": batch}
    cases: dict[str, Callable[[], object]] = {
        "floor": partial(_forwards, bundle, _ready(photo, batch), masks, batch),
        "ours": _kernel(bundle, photo, "rise", params),
        "ours (explain)": _explain(bundle, photo, "rise", **params),
    }
    notes = {"floor": f"{masks} forwards of ready inputs, batches of {batch}",
             "ours": "kernel: masks made per chunk", "ours (explain)": "+ the base forward"}
    seconds = timed(cases)
    return (f"## rise\n\n{masks} masks (7×7 grid, p = 0.5), batch {batch}. "
            "Target: ≤ 1.05× the floor.\n\n" + _table(seconds, "floor", notes) + "\n")


def _score_cam(bundle: xw.ModelBundle, photo: torch.Tensor, size: Sizes,
               timed: harness.Timed) -> str:
    batch = size.batch
    out = ["## score_cam\n"]
    for layer, cap in (("blocks.2", 0), ("bn2", 32)):
        channels = bundle.layers[layer].shape[0]
        used = int(xw.explain(bundle, photo, "score_cam", target=TARGET, layer=layer,
                              max_channels=cap, chunk_size=batch).extras["channels_used"])
        params = {"max_channels": cap, "chunk_size": batch}
        cases: dict[str, Callable[[], object]] = {
            "floor": partial(_forwards, bundle, _ready(photo, batch), 1 + channels if cap == 0
                             else 1 + cap, batch),
            "ours": _kernel(bundle, photo, "score_cam", params, layer=layer),
            "ours (explain)": _explain(bundle, photo, "score_cam", layer=layer, **params),
        }
        notes = {"floor": f"1 + {channels if cap == 0 else cap} forwards, batches of {batch}",
                 "ours": f"kernel, cached activations: {used} masked forwards (constant "
                         "channels have no mask)", "ours (explain)": "+ the base forward"}
        module = dict(bundle.model.named_modules())[layer]
        gradcam = _peer("grad-cam")
        if gradcam is not None and cap == 0:
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

            def peer_gradcam(module: Any = module, gradcam: Any = gradcam) -> object:
                cam = gradcam.ScoreCAM(model=bundle.model, target_layers=[module])
                cam.batch_size = batch
                try:
                    with eval_mode(bundle.model):
                        return cam(input_tensor=photo, targets=[ClassifierOutputTarget(TARGET)])
                finally:
                    cam.activations_and_grads.release()

            cases["pytorch-grad-cam"] = peer_gradcam
            notes["pytorch-grad-cam"] = f"ScoreCAM, batch_size {batch}, all {channels} channels"
        torchcam = _peer("torchcam")
        if torchcam is not None and cap == 0:
            def peer_torchcam(layer: str = layer, torchcam: Any = torchcam) -> object:
                with eval_mode(bundle.model):
                    extractor = torchcam.ScoreCAM(bundle.model, target_layer=layer,
                                                  batch_size=batch, input_shape=(3, 224, 224))
                    try:
                        with torch.no_grad():
                            scores = bundle.model(photo)
                        return extractor(class_idx=TARGET, scores=scores)
                    finally:
                        extractor.remove_hooks()

            cases["torchcam"] = peer_torchcam
            notes["torchcam"] = f"ScoreCAM, batch_size {batch}, all {channels} channels"
        seconds = timed(cases)
        what = (f"all {channels} channels of `{layer}`" if cap == 0 else
                f"`{layer}` ({channels} channels) capped at the top {cap} by mean activation")
        out.append(f"### {what}, batch {batch}\n\nTarget: ≤ 1.03× the floor, level with the "
                   "peers.\n\n" + _table(seconds, "floor", notes) + "\n")
    return "\n".join(out)


def _gradient_hessian(bundle: xw.ModelBundle, photo: torch.Tensor,
                      timed: harness.Timed) -> str:
    cases: dict[str, Callable[[], object]] = {
        "floor": partial(_forward_backward, bundle, photo, 1, 1),
        "default layer (bn2)": _explain(bundle, photo, "gradient_hessian"),
        "blocks.5": _explain(bundle, photo, "gradient_hessian", layer="blocks.5"),
        "bn2, probability": _explain(bundle, photo, "gradient_hessian", score="probability"),
    }
    notes = {"floor": "one forward+backward to the input",
             "default layer (bn2)": "explain: forward with graph; the GAP head's closed-form "
                                    "gradient, no backward",
             "blocks.5": "explain: forward + backward from the logits to blocks.5",
             "bn2, probability": "explain: softmax score, closed form on the GAP head"}
    seconds = timed(cases)
    return ("## gradient_hessian\n\nThe one-call API (a cold trace each time). "
            "Target: ≤ 3× one forward+backward.\n\n" + _table(seconds, "floor", notes) + "\n")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
