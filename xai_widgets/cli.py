"""Command line: ``python -m xai_widgets`` or ``xai-widgets``.

    xai-widgets explain photo.jpg --method grad_cam --target 281 --out map.png
    xai-widgets methods
    xai-widgets layers --model resnet18 --weights none
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from typing import Any

from .errors import ParameterError, XaiError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except XaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xai-widgets", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(required=True, metavar="command")

    explain = commands.add_parser("explain", help="explain a prediction and save the picture")
    explain.add_argument("images", nargs="+", help="image files")
    explain.add_argument("--method", default="grad_cam", help="method name (see 'methods')")
    explain.add_argument("--target", default="top1",
                         help="class index, class name, top1 or rankK (default top1)")
    explain.add_argument("--layer", default=None, help="layer name (see 'layers')")
    _model_options(explain)
    explain.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                         help="a method parameter, repeatable")
    explain.add_argument("--out", default="explanation.png",
                         help="picture to write (.png, .pdf, .svg, .jpg) into an existing "
                              "folder")
    explain.add_argument("--raw", default=None, help="also save the raw map (a .npy file)")
    explain.add_argument("--cmap", default=None, help="matplotlib colormap")
    explain.add_argument("--opacity", type=float, default=None, help="heat layer opacity 0..1")
    explain.add_argument("--polarity", default=None,
                         choices=["positive", "negative", "absolute", "signed"])
    explain.set_defaults(run=_explain)

    methods = commands.add_parser("methods", help="list the methods")
    methods.set_defaults(run=_methods)

    layers = commands.add_parser("layers", help="list a model's candidate layers")
    _model_options(layers)
    layers.set_defaults(run=_layers)

    _evaluate_parser(commands)
    from .deliberative.cli import add_parser as add_insecurities
    from .xfeatures.cli import add_parser as add_xfeatures

    add_insecurities(commands)
    add_xfeatures(commands)
    return parser


def _evaluate_parser(commands: Any) -> None:
    """The ``evaluate`` and ``summarize`` commands; the metric choices come from the
    registry."""
    from .distributed import add_options as add_cluster_options
    from .metrics.deletion import SCORES, SUBSTRATES
    from .metrics.registry import REGISTRY

    evaluate = commands.add_parser(
        "evaluate", help="faithfulness/localisation metrics over a folder (resumable)",
        description="Evaluate methods with metrics on every image of a folder; one JSON line "
                    "per image and method in --out, flushed as it is computed (run the same "
                    "command again to resume; a file that is not a results file is refused "
                    "unchanged; a second run on the same --out is refused while one runs).")
    evaluate.add_argument("folder", help="folder of images (searched recursively)")
    evaluate.add_argument("--methods", default="grad_cam", help="comma-separated method names")
    metrics = "; ".join(f"{spec.name} ({spec.label}{', needs --boxes' if spec.needs_boxes else ''})"
                        for spec in REGISTRY.values())
    evaluate.add_argument("--metrics", default="deletion,insertion",
                          help=f"comma-separated, any of: {metrics} (default deletion,insertion)")
    evaluate.add_argument("--out", default="results.jsonl",
                          help="results file: JSON lines, or a Parquet data set (a folder of "
                               "parts) for a name ending in .parquet (pip install "
                               "'xai-widgets[parquet]'); rerun to resume (default "
                               "results.jsonl)")
    evaluate.add_argument("--labels", default=None,
                          help="CSV file of 'image,label' rows: image = path relative to the "
                               "folder or file name, label = class index or name (default: "
                               "the predicted class)")
    evaluate.add_argument("--boxes", default=None,
                          help="CSV file of 'image,x0,y0,x1,y1' rows: the object's box in "
                               "pixels of the photo file (continuous: an inclusive box "
                               "xmin..xmax is xmin,xmax+1); several rows of one image are a "
                               "union (pointing games)")
    evaluate.add_argument("--start", type=int, default=0, help="shard: first image index")
    evaluate.add_argument("--stop", type=int, default=None, help="shard: stop before this index")
    evaluate.add_argument("--stride", type=int, default=1, help="shard: take every n-th image")
    evaluate.add_argument("--seed", type=int, default=0,
                          help="seed of the sanity check and of the model drawn by "
                               "--weights none (default 0)")
    evaluate.add_argument("--layer", default=None, help="layer for layer methods")
    evaluate.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE",
                          help="a method parameter, repeatable (e.g. "
                               "integrated_gradients.steps=16)")
    _model_options(evaluate)
    evaluate.add_argument("--pixels-per-step", type=int, default=None,
                          help="deletion/insertion step (default: the input width)")
    evaluate.add_argument("--deletion-substrate", default="zeros",
                          help=f"{', '.join(SUBSTRATES)} or an image file (default zeros)")
    evaluate.add_argument("--insertion-substrate", default="blur",
                          help=f"{', '.join(SUBSTRATES)} or an image file (default blur; "
                               "rise_blur: the RISE code's kernel)")
    evaluate.add_argument("--score", default="probability", choices=SCORES)
    evaluate.add_argument("--chunk-size", type=int, default=None,
                          help="inputs per forward pass (default: 2 on a CPU, 32 on a GPU)")
    evaluate.add_argument("--no-plots", action="store_true", help="do not save the plots")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_cluster_options(evaluate)
    evaluate.set_defaults(run=_evaluate)

    summarize = commands.add_parser("summarize", help="the table of results files (shards "
                                                      "of one run are merged)")
    summarize.add_argument("files", nargs="+", help="results files written by evaluate (JSON "
                                                     "lines, or Parquet folders or parts)")
    summarize.set_defaults(run=_summarize)


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="model name (default: the embedded efficientnet_lite0)")
    parser.add_argument("--weights", default="default",
                        help="'default' (pretrained), a torchvision weights name, or 'none'")


def _load(args: argparse.Namespace) -> Any:
    from .models import load_model

    return load_model(args.model, None if args.weights.lower() == "none" else args.weights)


def _explain(args: argparse.Namespace) -> int:
    from .explain import explain
    from .figures import writable_path
    from .render import RenderSettings

    # everything that can be refused is refused before any work is done
    out = writable_path(args.out)
    raw = writable_path(args.raw, (".npy",), "raw map") if args.raw else None
    settings = {k: v for k, v in (("cmap", args.cmap), ("opacity", args.opacity),
                                  ("polarity", args.polarity)) if v is not None}
    RenderSettings().updated(**settings)
    target: Any = int(args.target) if args.target.lstrip("-").isdigit() else args.target
    explanation = explain(_load(args), args.images, method=args.method, target=target,
                          layer=args.layer, **_params(args.param))
    explanation.save(out, **settings)
    print(f"{out}: {'; '.join(explanation.captions())}")
    if raw is not None:
        explanation.save(raw)
        print(f"{raw}: raw map {tuple(explanation.map.shape)}")
    return 0


def _params(pairs: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ParameterError(f"--param {pair!r} must look like NAME=VALUE")
        try:
            params[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            params[name] = text
    return params


def _methods(_args: argparse.Namespace) -> int:
    from .kernels import REGISTRY

    for spec in REGISTRY.values():
        layer = {"required": "layer", "optional": "layer?", "none": ""}[spec.layer_policy]
        print(f"{spec.name:18} {spec.cost:9} {layer}  {spec.label}: {spec.summary}")
    return 0


def _layers(args: argparse.Namespace) -> int:
    print(_load(args).layers)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from .distributed import client_for
    from .metrics import EvaluationSettings, evaluate_folder

    method_params: dict[str, dict[str, Any]] = {}
    for name, value in _params(args.param).items():
        method, dot, parameter = name.partition(".")
        if not dot:
            raise ParameterError(f"--param {name}=... must name the method: METHOD.NAME=VALUE, "
                                 "e.g. integrated_gradients.steps=16")
        method_params.setdefault(method, {})[parameter] = value
    settings = EvaluationSettings(
        methods=args.methods, metrics=args.metrics, layer=args.layer,
        method_params=method_params, labels=args.labels, boxes=args.boxes, start=args.start,
        stop=args.stop, stride=args.stride, seed=args.seed,
        pixels_per_step=args.pixels_per_step, deletion_substrate=args.deletion_substrate,
        insertion_substrate=args.insertion_substrate, score=args.score,
        chunk_size=args.chunk_size)
    torch.manual_seed(args.seed)  # the model that --weights none draws is the seed's
    model = _load(args)
    options = {"out": args.out, "progress": not args.no_progress, "plots": not args.no_plots}
    try:
        with client_for(args) as client:
            run = evaluate_folder(args.folder, model, settings, client=client,
                                  task_size=args.task_size, **options)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {args.out} holds every finished record; run the same command "
              "again to resume", file=sys.stderr)
        return 130
    print(run.report())
    return 0


def _summarize(args: argparse.Namespace) -> int:
    from .metrics import summarize

    print(summarize(*args.files))
    return 0
