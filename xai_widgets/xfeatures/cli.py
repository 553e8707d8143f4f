"""``xai-widgets xfeatures ...``: train an x-feature network on a folder, explain a photo.

    xai-widgets xfeatures train DIR --class espresso --out espresso.xnn
    xai-widgets xfeatures train demo --class espresso --out espresso.xnn   # the offline demo set
    xai-widgets xfeatures explain espresso.xnn photo.jpg --out maps.png
    xai-widgets xfeatures train DIR --class espresso --out espresso.xnn --workers 4  # Dask

:func:`add_parser` adds the ``xfeatures`` command to the toolkit's command line (each command
sets ``run``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import distributed
from ..errors import ParameterError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``xfeatures train`` and ``xfeatures explain`` to ``subparsers``."""
    parser = subparsers.add_parser(
        "xfeatures", help="x-features (XNN): explain a class by a few learned concepts",
        description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(required=True, metavar="xfeatures-command")

    train = commands.add_parser("train", help="extract features of a folder and train an XNN")
    train.add_argument("folder", help="a folder of images, an ImageFolder tree, or 'demo' "
                                      "(the offline espresso set)")
    train.add_argument("--class", dest="cls", required=True, help="the explained class")
    train.add_argument("--out", required=True, help="the .xnn file to write")
    train.add_argument("--features", type=int, default=5, help="number of x-features (5)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--layer", default=None,
                       help="embedding layer (default: the input of the last linear layer)")
    train.add_argument("--epochs", type=int, default=None,
                       help="fine-tuning epochs (default: scaled to the original schedule)")
    train.add_argument("--pretrain-epochs", type=int, default=None)
    train.add_argument("--checkpoint", default=None,
                       help="resume from / save to this checkpoint after every epoch")
    train.add_argument("--cache", default=None, help="feature cache folder")
    train.add_argument("--batch-size", type=int, default=32,
                       help="images per forward pass (and per task on a cluster; default 32)")
    _model_options(train)
    distributed.add_options(train, task_size=False)
    train.set_defaults(run=_train)

    explain = commands.add_parser("explain", help="the x-feature maps of photos, as a picture")
    explain.add_argument("xnn", help="a file written by 'xfeatures train'")
    explain.add_argument("images", nargs="+", help="image files")
    explain.add_argument("--out", required=True, help="picture to write (.png, .jpg, .pdf)")
    explain.add_argument("--layer", default=None,
                         help="layer of the maps (default: the model's default layer; "
                              "'input' for the image)")
    _model_options(explain)
    explain.set_defaults(run=_explain)
    return parser


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="model name (default: the embedded efficientnet_lite0)")
    parser.add_argument("--weights", default="default",
                        help="'default' (pretrained), a torchvision weights name, or 'none'")


def _load_model(args: argparse.Namespace) -> Any:
    from ..models import load_model

    return load_model(args.model, None if args.weights.lower() == "none" else args.weights)


def _out(path: str, suffixes: tuple[str, ...]) -> Path:
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ParameterError(f"--out {path!r}: the file must end in {' or '.join(suffixes)}")
    if not out.parent.exists():
        raise ParameterError(f"--out {path!r}: the folder {str(out.parent)!r} does not exist")
    return out


def _train(args: argparse.Namespace) -> int:
    from . import FeatureSet, train
    from .demo import espresso_folder

    out = _out(args.out, (".xnn",))
    bundle = _load_model(args)
    folder = espresso_folder() if args.folder == "demo" else args.folder
    cls: Any = int(args.cls) if args.cls.isdigit() else args.cls
    with distributed.client_for(args) as client:
        data = FeatureSet.extract(bundle, folder, cls=cls, layer=args.layer,
                                  cache_dir=args.cache, batch_size=args.batch_size,
                                  client=client)
    for name, reason in data.unreadable:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    print(f"{data!r}; {data.cached} from the cache")

    def progress(fraction: float, **series: Any) -> None:
        loss = series.get("loss")
        text = f" loss {float(loss[-1]):.4f}" if loss is not None and len(loss) else ""
        print(f"\rtraining {100 * fraction:5.1f}%{text}", end="", file=sys.stderr)

    xnn = train(data, n_features=args.features, seed=args.seed, progress=progress,
                checkpoint=args.checkpoint, epochs=args.epochs,
                pretrain_epochs=args.pretrain_epochs)
    print(file=sys.stderr)
    xnn.save(out)
    print(f"{out}: {xnn!r}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from . import load

    out = _out(args.out, (".png", ".jpg", ".jpeg", ".pdf", ".svg"))
    xnn = load(args.xnn, _load_model(args))
    result = xnn.explain(args.images, layer=args.layer)
    result.figure().savefig(out, dpi=100)
    for i, name in enumerate(result.contributions.names):
        print(f"{name}: {', '.join(result.titles(i))}")
    print(f"{out}: written")
    return 0
