"""``xai-widgets xfeatures train|explain``, through a parser built here (the lead wires
``add_parser`` into the toolkit's command line)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from PIL import Image
from xf_synthetic import Synthetic, write_tree

from xai_widgets.errors import ParameterError
from xai_widgets.xfeatures import cli, load


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xai-widgets")
    cli.add_parser(parser.add_subparsers(required=True))
    return parser


def test_train_then_explain(tmp_path: Path, synthetic: Synthetic,
                            monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "_load_model", lambda args: synthetic.bundle)
    folder = write_tree(tmp_path / "tree", synthetic.inputs, synthetic.present)
    out = tmp_path / "patterns.xnn"
    args = _parser().parse_args(["xfeatures", "train", str(folder), "--class", "patterns",
                                 "--out", str(out), "--features", "2", "--epochs", "2",
                                 "--pretrain-epochs", "1", "--cache", str(tmp_path / "cache")])
    assert args.run(args) == 0
    xnn = load(out, synthetic.bundle)
    assert xnn.n_features == 2 and xnn.class_name == "patterns"
    picture = next((folder / "patterns").iterdir())
    maps = tmp_path / "maps.png"
    args = _parser().parse_args(["xfeatures", "explain", str(out), str(picture),
                                 "--out", str(maps), "--layer", "features.2"])
    assert args.run(args) == 0
    assert Image.open(maps).size[0] > 300
    assert "x-feature" in capsys.readouterr().out


def test_bad_output_is_refused_before_any_work(tmp_path: Path) -> None:
    args = _parser().parse_args(["xfeatures", "train", str(tmp_path), "--class", "espresso",
                                 "--out", str(tmp_path / "model.pt")])
    with pytest.raises(ParameterError, match=r"\.xnn"):
        args.run(args)
    args = _parser().parse_args(["xfeatures", "explain", "a.xnn", "b.jpg",
                                 "--out", str(tmp_path / "nowhere" / "maps.png")])
    with pytest.raises(ParameterError, match="does not exist"):
        args.run(args)
