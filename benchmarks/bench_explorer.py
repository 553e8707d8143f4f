"""Explorer interactions: from a control change to the frame handed to the canvas.

For each model (224×224, batch 1) every interaction is timed through the Explorer's real
controls (``threaded=False``, no browser: the comm messages go nowhere), next to its floor
measured in the same process, interleaved:

* display change (opacity, colormap, rendering)          target ≤ 15 ms
* switch within the Grad-CAM family (Grad-CAM -> ++)     target ≤ render + 20 ms
* class switch                                           target ≤ cached-graph backward + 20 ms
* new image                                              target ≤ forward + backward + 30 ms

The family and class switches start from an empty cache of explanations (cleared before
each run, untimed; the trace is kept), the class switch picks a fresh class every time, and
a new image starts without traces (cleared before, untimed), so that what is timed is the
work of the interaction, never a cached picture. Run:
``python -m benchmarks.bench_explorer [--models resnet18 efficientnet_lite0] [--repeats 9]``.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

import xai_widgets as xw
from benchmarks.harness import CLOCKS, interleaved, machine, markdown_table, median
from xai_widgets.trace import TraceSet
from xai_widgets.widgets import Explorer

RESULTS = Path(__file__).resolve().parent / "results"


def bundle_for(name: str) -> xw.ModelBundle:
    if name == "efficientnet_lite0":
        return xw.load_model()
    torch.manual_seed(0)
    return xw.load_model(name, weights=None)


def measure(name: str, repeats: int, clock: str) -> list[list[str | float]]:
    bundle = bundle_for(name)
    photos = xw.sample_images()
    app = Explorer(bundle, images=photos, zoo=False, threaded=False)
    layer = bundle.layers.resolve(None)  # the default layer
    opacities = itertools.cycle([0.3, 0.7])
    colormaps = itertools.cycle(["viridis", "magma"])
    methods = itertools.cycle(["grad_cam_pp", "grad_cam"])
    classes = itertools.cycle(range(3, 1000, 11))
    images = itertools.cycle(["coffee", "rocket", "motorcycle", "chelsea"])

    def forget() -> None:  # a truly new image: no trace kept from an earlier visit
        app.session._traces.clear()
        app.session._explanations.clear()

    inputs = bundle.prepare(photos["coffee"]).inputs

    def forward() -> None:
        with torch.inference_mode():
            bundle.model(inputs)

    def forward_backward() -> None:
        traces = TraceSet(bundle, inputs, [layer])
        traces.get("gradient").gradient((1,), layer)

    warm = TraceSet(bundle, inputs, [layer]).get("gradient")
    targets = itertools.cycle([(t,) for t in range(10, 900, 7)])

    def cached_backward() -> None:
        warm._backward(next(targets), [layer])  # always the backward, never the closed form

    def render_only() -> None:
        scene = app.session.scene
        assert scene is not None, "the Explorer shows an explanation from the start"
        scene.explanation.render(**vars(app.session.settings))

    cases = {
        "opacity": lambda: setattr(app.display_controls.opacity, "value", next(opacities)),
        "colormap": lambda: setattr(app.display_controls.cmap, "value", next(colormaps)),
        "render": render_only,
        "family switch": lambda: setattr(app.method, "value", next(methods)),
        "class switch": lambda: app.classes._on_pick(next(classes)),
        "new image": lambda: setattr(app.image, "value", next(images)),
        "forward": forward,
        "forward+backward": forward_backward,
        "cached backward": cached_backward,
    }
    fresh = app.session._explanations.clear
    seconds = interleaved(cases, repeats=repeats, warmup=2, clock=CLOCKS[clock],
                          setups={"family switch": fresh, "class switch": fresh,
                                  "new image": forget})
    ms = {k: 1000 * median(v) for k, v in seconds.items()}
    f = ms["forward"]
    rows: list[tuple[str, float, str, bool]] = [
        ("display: opacity", ms["opacity"], "15 ms", ms["opacity"] <= 15),
        ("display: colormap", ms["colormap"], "15 ms", ms["colormap"] <= 15),
        ("Grad-CAM family switch", ms["family switch"], f"render + 20 = {ms['render'] + 20:.1f}",
         ms["family switch"] <= ms["render"] + 20),
        ("class switch", ms["class switch"], f"backward + 20 = {ms['cached backward'] + 20:.1f}",
         ms["class switch"] <= ms["cached backward"] + 20),
        ("new image", ms["new image"], f"f+b + 30 = {ms['forward+backward'] + 30:.1f}",
         ms["new image"] <= ms["forward+backward"] + 30),
    ]
    return [[name, what, value, value / f, target, "yes" if ok else "NO"]
            for what, value, target, ok in rows] + \
        [[name, "(one forward, for scale)", f, 1.0, "", ""]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "efficientnet_lite0"])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable on a shared machine)")
    parser.add_argument("--clock", default="cpu", choices=sorted(CLOCKS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [row for name in args.models for row in measure(name, args.repeats, args.clock)]
    table = markdown_table(["model", "interaction", "ms", "× forward", "target (ms)", "met"],
                           rows)
    info = ", ".join(f"{k} {v}" for k, v in machine(["torch"]).items())
    text = (f"# Explorer interactions\n\n`python -m benchmarks.bench_explorer`: "
            f"{args.threads} torch thread(s), {args.clock} clock, median of {args.repeats} "
            f"interleaved rounds after 2 warm-ups; batch 1, 224×224.\n\n{table}\n\n"
            f"Machine: {info}\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "explorer.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
