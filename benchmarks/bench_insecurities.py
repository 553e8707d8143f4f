"""Deliberative explanations (insecurities): one image's insecurities and a folder's ranking,
as ratios to their floors measured in the same process, interleaved.

* ``insecurities``: ``deliberative.insecurities(bundle, x, top_classes=5)`` (gradient
  attribution, entropy difficulty) vs the floor **f_grad**: one forward with autograd and one
  backward from the logits to the layer, written against torch. Target ≤ 1.3. Side by side:
  the same maps by a loop of 6 backward passes (5 classes + the difficulty) on one kept graph,
  as the original code did, and the backward alone three ways: batched
  (``is_grads_batched``), looped, and by repeating the batch 6 times in one forward.
* ``hardest``: ``deliberative.hardest(bundle, inputs, k=8)`` on 32 inputs, batch 16, vs the
  floor: the same batched forwards under ``torch.inference_mode()``. Target ≤ 1.05.

"× floor" is the ratio of medians, "paired × floor" the median of the per-round ratios (less
sensitive to a load that changes between rounds); the target is judged on the paired ratio.

Models: the embedded EfficientNet-Lite0 at its default layer (a global-average-pooling head:
the class rows are known in closed form there), and ResNet-18 (random weights) at ``layer4``
and at ``layer3`` (the backward crosses ``layer4``). Run:
``python -m benchmarks.bench_insecurities [--repeats 9] [--threads 1] [--clock cpu]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import xai_widgets as xw
from benchmarks.harness import (
    CLOCKS,
    interleaved,
    machine,
    markdown_table,
    median,
    paired_ratio,
    spread,
)
from xai_widgets import deliberative as dl
from xai_widgets.deliberative.scores import normalised_entropy

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = 5
READING = """How to read it. At the default layer of both models the head is a global average
pooling and a linear layer, so the rows of the 5 classes and of the difficulty are known in
closed form (no backward at all): insecurities cost the forward plus the bookkeeping of a trace. At
ResNet-18's `layer3` every row needs a real backward through `layer4`: 6 rows are 6 backward
passes of arithmetic, batched (`is_grads_batched`, a vmap over the rows) or looped alike on a
CPU, so the 1.3 target cannot hold there (it is met only where the backward to the layer is
small next to the forward); repeating the batch costs 6 forwards and is the slowest. The loop
of 6 backward passes (one per class and one for the difficulty, as the original) on one kept
graph is the bare arithmetic of the maps, without a trace, the head check or the pairs.
"""


def bundle_for(name: str) -> xw.ModelBundle:
    if name == "efficientnet_lite0":
        return xw.load_model()
    torch.manual_seed(0)
    return xw.load_model(name, weights=None)


class Graph:
    """One forward with autograd, the layer's output kept (hooks removed at once)."""

    def __init__(self, bundle: xw.ModelBundle, inputs: torch.Tensor, layer: str) -> None:
        module = dict(bundle.model.named_modules())[layer]
        kept: list[torch.Tensor] = []

        def keep(_m: Any, _a: Any, output: torch.Tensor) -> torch.Tensor:
            kept.append(output)
            return output.clone()  # the model may change it in place later

        handle = module.register_forward_hook(keep)
        try:
            self.logits = bundle.model(inputs)
        finally:
            handle.remove()
        self.layer = kept[0]


def seeds(logits: torch.Tensor, rows: int) -> torch.Tensor:
    """One-hot rows of the top classes and the entropy's seed: ``(rows + 1, N, C)``."""
    top = logits.detach().topk(rows, dim=1).indices
    out = torch.zeros(rows + 1, *logits.shape)
    for r in range(rows):
        out[r].scatter_(1, top[:, r:r + 1], 1.0)
    leaf = logits.detach().requires_grad_(True)
    with torch.enable_grad():
        (out[rows],) = torch.autograd.grad(normalised_entropy(leaf).sum(), leaf)
    return out


def measure(name: str, layer: str | None, repeats: int, clock: str) -> list[list[object]]:
    bundle = bundle_for(name)
    model = bundle.model.eval()
    layer = bundle.layers.resolve(layer, model)
    x = bundle.prepare(xw.sample_images()["chelsea"]).inputs

    def floor() -> object:
        g = Graph(bundle, x, layer)
        seed = torch.zeros_like(g.logits)
        seed[0, int(g.logits.argmax())] = 1.0
        return torch.autograd.grad(g.logits, g.layer, seed)

    def ours() -> object:
        return dl.insecurities(bundle, x, top_classes=CLASSES, layer=layer)

    def loop() -> object:  # the original: one backward per class and one for the difficulty
        g = Graph(bundle, x, layer)
        rows = seeds(g.logits, CLASSES)
        return [torch.autograd.grad(g.logits, g.layer, rows[r], retain_graph=True)
                for r in range(len(rows))]

    kept = Graph(bundle, x, layer)
    rows = seeds(kept.logits, CLASSES)

    def backward_batched() -> object:
        return torch.autograd.grad(kept.logits, kept.layer, rows, retain_graph=True,
                                   is_grads_batched=True)

    def backward_loop() -> object:
        return [torch.autograd.grad(kept.logits, kept.layer, rows[r], retain_graph=True)
                for r in range(len(rows))]

    def repeated_batch() -> object:  # forward on 6 copies, one backward
        g = Graph(bundle, x.expand(len(rows), -1, -1, -1), layer)
        return torch.autograd.grad(g.logits, g.layer, rows[:, 0])

    cases: dict[str, Callable[[], object]] = {
        "f_grad": floor, "insecurities": ours, "loop": loop,
        "backward batched": backward_batched, "backward loop": backward_loop,
        "repeated batch": repeated_batch}
    seconds = interleaved(cases, repeats=repeats, warmup=2, clock=CLOCKS[clock])
    ms = {k: 1000 * median(v) for k, v in seconds.items()}
    f = ms["f_grad"]
    where = f"{name} · {layer}"
    paired = paired_ratio(seconds, "insecurities", "f_grad")
    return [
        [where, "f_grad (floor: forward + backward to the layer)", ms["f_grad"],
         f"±{spread(seconds['f_grad']):.0%}", 1.0, "", "", ""],
        [where, "insecurities, 5 classes, gradient", ms["insecurities"],
         f"±{spread(seconds['insecurities']):.0%}", ms["insecurities"] / f, paired, "1.30",
         "yes" if paired <= 1.3 else "NO"],
        [where, "same maps, 6 backward passes in a loop", ms["loop"], "", ms["loop"] / f,
         paired_ratio(seconds, "loop", "f_grad"), "", ""],
        [where, "backward only: batched (is_grads_batched)", ms["backward batched"], "",
         ms["backward batched"] / f, "", "", ""],
        [where, "backward only: 6 in a loop", ms["backward loop"], "",
         ms["backward loop"] / f, "", "", ""],
        [where, "repeated batch: forward ×6 + one backward", ms["repeated batch"], "",
         ms["repeated batch"] / f, "", "", ""],
    ]


def measure_hardest(name: str, repeats: int, clock: str, count: int = 32,
                    batch: int = 16) -> list[list[object]]:
    bundle = bundle_for(name)
    model = bundle.model.eval()
    generator = torch.Generator().manual_seed(0)
    crop = bundle.preprocessing.crop
    inputs = [torch.randn(3, *crop, generator=generator) for _ in range(count)]

    def floor() -> object:
        with torch.inference_mode():
            return [model(torch.stack(inputs[i:i + batch])) for i in range(0, count, batch)]

    def ours() -> object:
        return dl.hardest(bundle, inputs, k=8, difficulty="entropy", batch_size=batch)

    seconds = interleaved({"forwards": floor, "hardest": ours}, repeats=repeats, warmup=1,
                          clock=CLOCKS[clock])
    ms = {k: 1000 * median(v) for k, v in seconds.items()}
    ratio = ms["hardest"] / ms["forwards"]
    paired = paired_ratio(seconds, "hardest", "forwards")
    return [[f"{name} · {count} inputs, batch {batch}", "batched forwards (floor)",
             ms["forwards"], f"±{spread(seconds['forwards']):.0%}", 1.0, "", "", ""],
            [f"{name} · {count} inputs, batch {batch}", "hardest(k=8), entropy", ms["hardest"],
             f"±{spread(seconds['hardest']):.0%}", ratio, paired, "1.05",
             "yes" if paired <= 1.05 else "NO"]]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable on a shared machine)")
    parser.add_argument("--clock", default="cpu", choices=sorted(CLOCKS))
    parser.add_argument("--quick", action="store_true", help="the embedded model only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = [("efficientnet_lite0", None)]
    if not args.quick:
        settings += [("resnet18", "layer4"), ("resnet18", "layer3")]
    rows = [row for name, layer in settings for row in measure(name, layer, args.repeats,
                                                               args.clock)]
    rows += measure_hardest("efficientnet_lite0", args.repeats, args.clock)
    table = markdown_table(["setting", "case", "ms", "noise", "× floor", "paired × floor",
                            "target", "met"], rows)
    info = ", ".join(f"{k} {v}" for k, v in machine(["torch"]).items())
    text = (f"# Insecurities (deliberative explanations)\n\n"
            f"`python -m benchmarks.bench_insecurities`: {args.threads} torch thread(s), "
            f"{args.clock} clock, median of {args.repeats} interleaved rounds after warm-up; "
            f"the chelsea photo at 224×224, batch 1.\n\n{table}\n\n{READING}\n"
            f"Machine: {info}\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "insecurities.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
