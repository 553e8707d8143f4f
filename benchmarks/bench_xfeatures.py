"""X-features (issue 11): extraction, training epochs, maps; ratios measured in one process.

    python -m benchmarks.bench_xfeatures [--images 32] [--repeats 5] [--threads 1]

The embedded EfficientNet-Lite0 on the offline demo set (JPEG crops, 256×256), cases
interleaved round by round (:mod:`.harness`):

``extract``       ``FeatureSet.extract`` of the images, cache off: read + hash the files,
                  decode, preprocess, batched forward with the embedding hook;
``forward``       its floor, the plain way: decode and preprocess the same files, the same
                  batched forward under ``torch.inference_mode()``;
``maps``          the c-EB maps of all x-features of one photo (5 x-features, one batched
                  backward) at the model's default layer;
``one c-EB map``  its unit, ``xw.explain(..., "contrastive_excitation_backprop")`` at that
                  layer: one forward and one backward;
``epoch``         one fine-tuning epoch of the SRAE (original sizes: 1280 → 800 → 100 → 5) on
                  cached features (no CNN): reported as time per epoch and per minibatch.

Targets: extract ≤ 1.05 × forward; maps ≤ 2 × one c-EB map. Results:
``benchmarks/results/xfeatures.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

import xai_widgets as xw
from xai_widgets.images import _model_input, to_pil
from xai_widgets.xfeatures import FeatureSet, SRAEConfig
from xai_widgets.xfeatures.demo import espresso_folder
from xai_widgets.xfeatures.features import Embedding
from xai_widgets.xfeatures.maps import xfeature_maps
from xai_widgets.xfeatures.srae import SRAE, train_srae

from . import harness

RESULTS = Path(__file__).resolve().parent / "results" / "xfeatures.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", default="cpu", choices=sorted(harness.CLOCKS))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = harness.CLOCKS[args.clock]
    bundle = xw.load_model()
    folder = espresso_folder(positives=40, per_negative_photo=4)  # the notebook's set
    files = sorted(p for p in folder.rglob("*.jpg"))[:args.images]

    def extract() -> object:
        return FeatureSet.extract(bundle, files, cls="espresso", cache_dir=False,
                                  batch_size=args.batch,
                                  positives=[i % 2 == 0 for i in range(len(files))])

    def forward() -> object:
        outputs = []
        for start in range(0, len(files), args.batch):
            chunk = files[start:start + args.batch]
            batch = torch.stack([_model_input(to_pil(p)[0], bundle.preprocessing)
                                 for p in chunk])
            with torch.inference_mode():
                outputs.append(bundle.model(batch))
        return outputs

    data = FeatureSet.extract(bundle, folder, cls="espresso")
    generator = torch.Generator().manual_seed(0)
    srae = SRAE(data.dim, 5).initialise(generator).eval()
    photo = bundle.prepare(xw.sample_images()["coffee"]).inputs
    layer = bundle.layers.default
    embedding = _embedding(data)

    def maps() -> object:
        return xfeature_maps(bundle, srae, embedding, photo, layer)

    def one_map() -> object:
        return xw.explain(bundle, photo, "contrastive_excitation_backprop", target="espresso",
                          layer=layer)

    seconds = harness.interleaved({"extract": extract, "forward": forward, "maps": maps,
                                   "one c-EB map": one_map},
                                  repeats=args.repeats, warmup=args.warmup, clock=clock)
    epochs, per_epoch = _epoch_time(data, clock)
    rows = [
        ["extract / forward", f"{len(files)} images, batch {args.batch}",
         harness.paired_ratio(seconds, "extract", "forward"), "≤ 1.05",
         harness.median(seconds["extract"]), harness.median(seconds["forward"])],
        ["maps of 5 x-features / one c-EB map", f"1 photo, layer {layer}",
         harness.paired_ratio(seconds, "maps", "one c-EB map"), "≤ 2",
         harness.median(seconds["maps"]), harness.median(seconds["one c-EB map"])],
    ]
    steps = -(-len(data) * 4 // 5 // 50)
    report = "\n".join([
        "# X-features (XNN / SRAE)",
        "",
        __doc__.split("\n\n", 2)[2].rsplit("\n\nTargets", 1)[0],
        "",
        harness.markdown_table(["ratio", "setting", "measured (median of rounds)", "target",
                                "case s", "floor s"], rows),
        "",
        f"Training on cached features ({len(data)} images, {data.dim}-d, about 80 % for "
        f"training: {steps} minibatches of 50 per epoch): **{per_epoch * 1000:.0f} ms per "
        f"fine-tuning epoch** ({per_epoch / steps * 1000:.1f} ms per minibatch; median of "
        f"{epochs} epochs, pretraining included in the run).",
        "",
        f"Clock: {args.clock}; torch threads: {args.threads}; rounds: {args.repeats}.",
        "",
        harness.machine_table(["torch", "timm"]),
    ])
    harness.publish(report, args.out)


def _embedding(data: FeatureSet) -> Embedding:
    module, _, side = data.layer.partition(":")
    return Embedding(module, "input" if side == "input" else "output")


def _epoch_time(data: FeatureSet, clock: Callable[[], float]) -> tuple[int, float]:
    train, test = data.split(0.2, 0)
    times: list[float] = []
    last = [clock()]

    def progress(fraction: float, **series: object) -> None:
        now = clock()
        if "loss" in series:
            times.append(now - last[0])
        last[0] = now

    config = SRAEConfig(pretrain_epochs=1, head_epochs=1, epochs=6, retune_rounds=1)
    train_srae(data.z, data.y, train, test, config, 0, progress)
    return len(times), harness.median(times[1:] or times)


if __name__ == "__main__":
    main()
