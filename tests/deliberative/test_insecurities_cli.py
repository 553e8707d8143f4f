"""``xai-widgets insecurities DIR``: the subcommand's parser and run, on a tiny model."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import PlainNet, bundle

import xai_widgets as xw
from xai_widgets import deliberative as dl
from xai_widgets.deliberative import cli


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / "photos"
    (images / "sub").mkdir(parents=True)
    for i in range(5):
        where = images / "sub" if i == 4 else images
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
            where / f"img{i}.png")
    (images / "broken.jpg").write_bytes(b"no")
    (images / "notes.txt").write_text("not an image")
    return images


@pytest.fixture
def tiny(monkeypatch) -> xw.ModelBundle:
    torch.manual_seed(0)
    model = bundle(PlainNet(6), 16, classes=6)
    monkeypatch.setattr(cli, "_load", lambda _args: model)
    return model


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xai-widgets")
    cli.add_parser(parser.add_subparsers(required=True))
    return parser.parse_args(argv)


def test_writes_the_hardest_images_their_pairs_and_a_gallery(folder, tiny, tmp_path,
                                                             capsys) -> None:
    out = tmp_path / "insecurities.jsonl"
    args = parse(["insecurities", str(folder), "--k", "3", "--out", str(out),
                  "--top-classes", "4", "--difficulty", "cs"])
    assert args.run(args) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    header, records = lines[0], lines[1:]
    assert header["kind"] == "header" and header["scored"] == 5
    assert [f["image"] for f in header["failed"]] == ["broken.jpg"]
    assert [r["rank"] for r in records] == [1, 2, 3]
    ranking = dl.hardest(tiny, folder, k=3, difficulty="cs")
    assert [r["image"] for r in records] == [h.name for h in ranking]
    assert [r["score"] for r in records] == pytest.approx([h.score for h in ranking])
    direct = dl.insecurities(tiny, folder / records[0]["image"], difficulty="cs", top_classes=4)
    assert [p["names"] for p in records[0]["pairs"]] == [list(p.names) for p in direct.pairs]
    assert np.allclose(records[0]["pairs"][0]["map"], direct.pairs[0].map.numpy(), atol=1e-6)
    gallery = tmp_path / "insecurities_gallery"
    pictures = sorted(p.name for p in gallery.glob("*.png"))
    assert len(pictures) == 3 and pictures[0].startswith("0001_")
    assert all(p in (gallery / "index.html").read_text() for p in pictures)
    assert "3 hardest of 5 images" in capsys.readouterr().out


def test_a_saved_hardness_predictor_drives_the_ranking(folder, tiny, tmp_path) -> None:
    predictor = dl.HardnessPredictor(8, tiny.layers.default, hidden=(4, 4)).eval()
    path = dl.save_predictor(predictor, tmp_path / "hp.pt")
    again = dl.load_predictor(path)
    x = torch.randn(3, 8, 4, 4)
    torch.testing.assert_close(again(x), predictor(x))
    assert again.layer == predictor.layer and again.output == "sigmoid"
    out = tmp_path / "hp.jsonl"
    args = parse(["insecurities", str(folder), "--k", "2", "--out", str(out), "--predictor",
                  str(path), "--gallery", "none"])
    assert args.run(args) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()][1:]
    ranking = dl.hardest(tiny, folder, k=2, difficulty=again)
    assert [r["image"] for r in records] == [h.name for h in ranking]
    assert records[0]["difficulty"]["kind"] == "hp"
    assert not (tmp_path / "hp_gallery").exists()


def test_bad_arguments_give_clear_errors(folder, tiny, tmp_path) -> None:
    args = parse(["insecurities", str(folder), "--k", "0", "--out", str(tmp_path / "x.jsonl")])
    with pytest.raises(xw.ParameterError, match="k must be an integer"):
        args.run(args)
    args = parse(["insecurities", str(folder), "--difficulty", "hp"])
    with pytest.raises(xw.ParameterError, match="needs a hardness predictor"):
        args.run(args)
    args = parse(["insecurities", str(tmp_path / "nowhere")])
    with pytest.raises(xw.ImageError, match="not a folder"):
        args.run(args)
