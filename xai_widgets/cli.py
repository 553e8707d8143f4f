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
                         help="class index, class name or topK (default top1)")
    explain.add_argument("--layer", default=None, help="layer name (see 'layers')")
    _model_options(explain)
    explain.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                         help="a method parameter, repeatable")
    explain.add_argument("--out", default="explanation.png",
                         help="picture to write (.png, .pdf, .svg)")
    explain.add_argument("--raw", default=None, help="also save the raw map as .npy")
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

    evaluate = commands.add_parser(
        "evaluate", help="faithfulness/localisation metrics over a folder (resumable)")
    evaluate.add_argument("folder", help="folder of images (searched recursively)")
    evaluate.add_argument("--methods", default="grad_cam", help="comma-separated method names")
    evaluate.add_argument("--metrics", default="deletion,insertion",
                          help="comma-separated: deletion, insertion, pointing, "
                               "energy_pointing, tradeoff, sanity")
    evaluate.add_argument("--out", default="results.jsonl",
                          help="JSON-lines results file; rerun to resume (default results.jsonl)")
    evaluate.add_argument("--labels", default=None, help="CSV of image,label (default: predicted)")
    evaluate.add_argument("--boxes", default=None,
                          help="CSV of image,x0,y0,x1,y1 in the photo's pixels (pointing games)")
    evaluate.add_argument("--start", type=int, default=0, help="shard: first image index")
    evaluate.add_argument("--stop", type=int, default=None, help="shard: stop before this index")
    evaluate.add_argument("--stride", type=int, default=1, help="shard: take every n-th image")
    evaluate.add_argument("--layer", default=None, help="layer for layer methods")
    _model_options(evaluate)
    evaluate.add_argument("--pixels-per-step", type=int, default=None,
                          help="deletion/insertion step (default: the input width)")
    evaluate.add_argument("--score", default="probability", choices=["probability", "logit"])
    evaluate.add_argument("--chunk-size", type=int, default=None,
                          help="inputs per forward pass (default: 2 on a CPU, 32 on a GPU)")
    evaluate.add_argument("--no-plots", action="store_true", help="do not save the plots")
    evaluate.set_defaults(run=_evaluate)
    return parser


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

    target: Any = int(args.target) if args.target.lstrip("-").isdigit() else args.target
    explanation = explain(_load(args), args.images, method=args.method, target=target,
                          layer=args.layer, **_params(args.param))
    settings = {k: v for k, v in (("cmap", args.cmap), ("opacity", args.opacity),
                                  ("polarity", args.polarity)) if v is not None}
    explanation.save(args.out, **settings)
    print(f"{args.out}: {'; '.join(explanation.captions())}")
    if args.raw:
        explanation.save(args.raw)
        print(f"{args.raw}: raw map {tuple(explanation.map.shape)}")
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
        layer = "layer" if spec.needs_layer else "     "
        print(f"{spec.name:18} {spec.cost:9} {layer}  {spec.label}: {spec.summary}")
    return 0


def _layers(args: argparse.Namespace) -> int:
    print(_load(args).layers)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .metrics import evaluate_folder

    try:
        run = evaluate_folder(
            args.folder, _load(args), methods=args.methods.split(","),
            metrics=args.metrics.split(","), out=args.out, labels=args.labels,
            boxes=args.boxes, start=args.start, stop=args.stop, stride=args.stride,
            layer=args.layer, pixels_per_step=args.pixels_per_step, score=args.score,
            chunk_size=args.chunk_size, plots=not args.no_plots)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {args.out} holds every finished record; run the same command "
              "again to resume", file=sys.stderr)
        return 130
    print(run.report())
    return 0
