"""``xai-widgets insecurities DIR --k 100 --out insecurities.jsonl``: the K hardest images of a
folder with their ambiguous pairs and maps (JSON lines), and a gallery (a PNG per image and an
HTML index). With ``--workers N`` or ``--scheduler ADDR`` the ranking, the analyses and the
pictures run on Dask workers (:mod:`xai_widgets.distributed`; the same files).

The lead's ``cli.py`` wires it in with ``add_parser(subparsers)``; the subcommand's
``run(args)`` returns the exit status.
"""

from __future__ import annotations

import argparse
import functools
import html
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .. import distributed
from ..models import ModelBundle
from .core import analyse
from .hardness import load_predictor
from .maps import ATTRIBUTIONS
from .ranking import hardest
from .scores import DIFFICULTIES


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``insecurities`` subcommand to an ``argparse`` subparsers object."""
    parser = subparsers.add_parser(
        "insecurities", help="the hardest images of a folder and where the network hesitates",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("folder", help="folder of images (searched recursively)")
    parser.add_argument("--k", type=int, default=100, help="how many of the hardest images "
                        "to explain (default 100)")
    parser.add_argument("--out", default="insecurities.jsonl",
                        help="JSON-lines file to write (default insecurities.jsonl)")
    parser.add_argument("--gallery", default=None,
                        help="folder for the PNGs and index.html (default: OUT's name + "
                             "_gallery, next to it); 'none' for no gallery")
    parser.add_argument("--difficulty", default="entropy", choices=DIFFICULTIES,
                        help="cs, entropy (default) or hp (needs --predictor)")
    parser.add_argument("--predictor", default=None,
                        help="a hardness predictor saved by deliberative.save_predictor")
    parser.add_argument("--attribution", default="gradient", choices=ATTRIBUTIONS)
    parser.add_argument("--top-classes", type=int, default=5)
    parser.add_argument("--area", type=float, default=0.1,
                        help="segment area fraction in the pictures (default 0.1)")
    parser.add_argument("--pairs", type=int, default=3, help="pairs per picture (default 3)")
    parser.add_argument("--layer", default=None, help="layer (default: the last spatial one)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", default=None,
                        help="model name (default: the embedded efficientnet_lite0)")
    parser.add_argument("--weights", default="default",
                        help="'default' (pretrained), a torchvision weights name, or 'none'")
    distributed.add_options(parser, task_size=False)
    parser.set_defaults(run=run)
    return parser


def _load(args: argparse.Namespace) -> ModelBundle:
    from ..models import load_model

    return load_model(args.model, None if args.weights.lower() == "none" else args.weights)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[-80:]


@dataclass
class _Analyser:
    """Analyses batches of images and draws their pictures (on a worker, or here)."""

    bundle: ModelBundle
    difficulty: Any
    args: argparse.Namespace
    gallery: bool

    def modules(self) -> list[nn.Module]:
        return [self.bundle.model] + ([self.difficulty]
                                      if isinstance(self.difficulty, nn.Module) else [])

    def chunk(self, named: list[tuple[str, Any]]
              ) -> list[tuple[dict[str, Any], bytes | None, str]]:
        """The record fields, the PNG (or None) and the pairs' text of each ``(name,
        image)``."""
        args = self.args
        results = analyse(self.bundle, [source for _, source in named],
                          difficulty=self.difficulty, attribution=args.attribution,
                          top_classes=args.top_classes, layer=args.layer)
        drawn: list[tuple[dict[str, Any], bytes | None, str]] = []
        for (name, _), result in zip(named, results, strict=True):
            result.name = name
            fields = {k: v for k, v in result.to_dict().items() if k != "image"}
            picture = None
            if self.gallery:
                buffer = io.BytesIO()
                result.figure(pairs=args.pairs, area=args.area).savefig(buffer, dpi=80,
                                                                         format="png")
                picture = buffer.getvalue()
            pairs = "; ".join(f"{html.escape(p.label)} ({p.score:.3g})"
                              for p in result.pairs[:args.pairs])
            drawn.append((fields, picture, pairs))
        return drawn


def run(args: argparse.Namespace) -> int:
    bundle = _load(args)
    predictor = load_predictor(args.predictor) if args.predictor else None
    difficulty: Any = predictor if predictor is not None else args.difficulty
    with distributed.client_for(args) as client:
        return _run(args, bundle, difficulty, client)


def _run(args: argparse.Namespace, bundle: ModelBundle, difficulty: Any, client: Any) -> int:
    ranking = hardest(bundle, args.folder, k=args.k, difficulty=difficulty,
                      layer=args.layer, batch_size=args.batch_size, client=client)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.gallery is None:
        gallery: Path | None = out.with_name(out.stem + "_gallery")
    else:
        gallery = None if args.gallery.lower() == "none" else Path(args.gallery)
    if gallery is not None:
        gallery.mkdir(parents=True, exist_ok=True)
    header = {"kind": "header", "model": bundle.name, "folder": str(args.folder),
              "difficulty": ranking.difficulty, "attribution": args.attribution,
              "top_classes": args.top_classes, "k": args.k, "scored": ranking.total,
              "failed": [{"image": n, "error": e} for n, e in ranking.failed]}
    rows: list[str] = []
    with out.open("w", encoding="utf-8") as stream:
        stream.write(json.dumps(header, ensure_ascii=False) + "\n")
        items = list(ranking)
        analyser = _Analyser(bundle, difficulty, args, gallery is not None)
        analysed = distributed.run(
            [(h.name, h.source) for h in items],
            functools.partial(distributed.placed, analyser, *analyser.modules()),
            _Analyser.chunk, client=client, task_size=args.batch_size)
        for rank, (hard, (fields, png, pairs)) in enumerate(zip(items, analysed, strict=True),
                                                            start=1):
            record = {"rank": rank, "image": hard.name, "score": hard.score, **fields}
            if gallery is not None and png is not None:
                picture = gallery / f"{rank:04d}_{_safe(hard.name)}.png"
                picture.write_bytes(png)
                record["picture"] = picture.name
                rows.append(f"<li><p>{rank}. {html.escape(hard.name)} · difficulty "
                            f"{hard.score:.4f} · {pairs}</p><img src=\"{picture.name}\" "
                            f"loading=\"lazy\"/></li>")
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
            stream.flush()
    if gallery is not None:
        (gallery / "index.html").write_text(
            "<!doctype html><meta charset=\"utf-8\"><title>insecurities</title>"
            f"<h1>The {len(rows)} hardest images of {html.escape(str(args.folder))}</h1>"
            f"<p>{html.escape(ranking.difficulty)} · {html.escape(args.attribution)} · "
            f"{ranking.total} images scored, {len(ranking.failed)} unreadable</p>"
            f"<ol style=\"list-style:none\">{''.join(rows)}</ol>\n", encoding="utf-8")
    print(f"{out}: {len(ranking)} hardest of {ranking.total} images"
          + (f"; gallery {gallery / 'index.html'}" if gallery is not None else "")
          + (f"; {len(ranking.failed)} unreadable" if ranking.failed else ""))
    return 0
