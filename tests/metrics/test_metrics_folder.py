"""Metrics over a folder: resume, shards, unreadable images, labels and boxes, bad inputs,
the summary and its confidence intervals, and the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from test_contract import assert_same, snapshot
from tiny_models import PlainNet, bundle

import xai_widgets as xw
from xai_widgets import cli, metrics
from xai_widgets.metrics import Cancelled, MetricError

QUICK = {"methods": ["grad_cam", "saliency"], "metrics": ["deletion", "insertion"],
         "pixels_per_step": 64, "progress": False, "plots": False}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Five 16×16 photos (one in a subfolder), a broken JPEG and a text file."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png", "d.png", "sub/e.png"):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / name)
    (root / "broken.jpg").write_bytes(b"this is not a JPEG")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def model():
    torch.manual_seed(0)
    return bundle(PlainNet().eval(), size=16, classes=5)


def test_resumed_run_writes_the_same_file(folder: Path, model, tmp_path: Path) -> None:
    whole = tmp_path / "whole.jsonl"
    metrics.evaluate_folder(folder, model, out=whole, **QUICK)

    parts = tmp_path / "parts.jsonl"
    seen = []

    def stop_after_two(fraction: float, _preview: object) -> None:
        seen.append(fraction)
        if len(seen) == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        metrics.evaluate_folder(folder, model, out=parts, **{**QUICK, "progress": stop_after_two})
    lines = parts.read_text().splitlines(keepends=True)
    assert len(lines) == 1 + 2 + 2            # header, a.png and b.png × 2 methods
    parts.write_text("".join(lines[:-1]) + lines[-1][:25])    # killed in mid-write
    run = metrics.evaluate_folder(folder, model, out=parts, **QUICK)
    assert parts.read_bytes() == whole.read_bytes()
    assert run.written == 1 + 2 * 3           # b.png's saliency, then c, d, sub/e
    assert run.skipped == 1                   # a.png
    assert [f[0] for f in run.failed] == ["broken.jpg"]
    again = metrics.evaluate_folder(folder, model, out=parts, **QUICK)
    assert (again.written, again.skipped) == (0, 6)
    assert parts.read_bytes() == whole.read_bytes()


def test_unreadable_images_are_recorded_and_counted(folder: Path, model, tmp_path: Path
                                                    ) -> None:
    before = snapshot(model.model)
    out = tmp_path / "r.jsonl"
    run = metrics.evaluate_folder(folder, model, out=out, **{**QUICK, "plots": True})
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["kind"] == "header"
    assert [r["image"] for r in records[1:]] == ["a.png"] * 2 + ["b.png"] * 2 + \
        ["broken.jpg"] + ["c.png"] * 2 + ["d.png"] * 2 + ["sub/e.png"] * 2
    broken = records[5]
    assert "cannot be decoded" in broken["error"]
    assert [f[0] for f in run.failed] == ["broken.jpg"]
    assert run.ignored == ["notes.txt"]
    assert run.summary.failed[0][0] == "broken.jpg"
    assert "1 failed" in run.summary.table() and "broken.jpg" in run.report()
    assert run.summary.value("grad_cam", "deletion").n == 5
    assert [p.name for p in run.plots] == ["r.grad_cam.png", "r.saliency.png"]
    assert all(p.stat().st_size > 1000 for p in run.plots)
    record = records[1]
    assert record["curve_step"] == [64, 256]
    assert len(record["curves"]["deletion"]) == 5
    assert record["target_from"] == "prediction"
    assert_same(before, snapshot(model.model))


def test_shards_split_the_images_and_merge(folder: Path, model, tmp_path: Path) -> None:
    shards = [tmp_path / f"shard{k}.jsonl" for k in range(2)]
    for k, out in enumerate(shards):
        metrics.evaluate_folder(folder, model, out=out, start=k, stride=2,
                                **{**QUICK, "methods": ["grad_cam"]})
    images = [[json.loads(line)["image"] for line in out.read_text().splitlines()[1:]]
              for out in shards]
    assert images == [["a.png", "broken.jpg", "d.png"], ["b.png", "c.png", "sub/e.png"]]
    whole = tmp_path / "whole.jsonl"
    metrics.evaluate_folder(folder, model, out=whole, **{**QUICK, "methods": ["grad_cam"]})
    merged, single = metrics.summarize(*shards), metrics.summarize(whole)
    for ours, theirs in zip(merged.rows, single.rows, strict=True):
        assert (ours.method, ours.metric, ours.n) == (theirs.method, theirs.metric, theirs.n)
        assert (ours.mean, ours.half_width) == pytest.approx((theirs.mean, theirs.half_width))
    assert len(merged.failed) == len(single.failed) == 1
    first = tmp_path / "first.jsonl"
    metrics.evaluate_folder(folder, model, out=first, start=1, stop=3,
                            **{**QUICK, "methods": ["grad_cam"]})
    assert [json.loads(line)["image"] for line in first.read_text().splitlines()[1:]] == \
        ["b.png", "broken.jpg"]


def test_labels_and_boxes(folder: Path, model, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\na.png,3\nsub/e.png,class1\nb.png,nonsense\n")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("a.png,0,0,16,16\ne.png,0,0,1,1\ne.png,15,15,16,16\n")
    out = tmp_path / "r.jsonl"
    run = metrics.evaluate_folder(
        folder, model, out=out, labels=labels, boxes=boxes, tolerance=0.0,
        **{**QUICK, "methods": ["grad_cam"],
           "metrics": ["pointing", "energy_pointing", "tradeoff", "sanity"]})
    records = {r["image"]: r for r in map(json.loads, out.read_text().splitlines()[1:])}
    assert records["a.png"]["target"] == 3 and records["a.png"]["target_from"] == "label"
    assert records["sub/e.png"]["target"] == 1
    assert records["c.png"]["target_from"] == "prediction"
    assert "unknown class name 'nonsense'" in records["b.png"]["error"]
    assert records["a.png"]["pointing"] == 1.0              # the box covers the whole image
    assert records["c.png"]["pointing"] is None             # no box: undefined, not a miss
    assert records["a.png"]["thresholds"] == [0.0]
    assert set(records["a.png"]) >= {"amount", "reidentified", "sanity_spearman", "sanity_ssim"}
    pointing = run.summary.value("grad_cam", "pointing")
    assert pointing.n + pointing.undefined == 4
    assert pointing.undefined >= 2                          # c.png and d.png have no box


def test_bad_folders_and_settings(folder: Path, model, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    with pytest.raises(xw.ImageError, match="no image files in"):
        metrics.evaluate_folder(empty, model, out=tmp_path / "x.jsonl", **QUICK)
    with pytest.raises(xw.ImageError, match="is not a folder"):
        metrics.evaluate_folder(tmp_path / "missing", model, **QUICK)
    with pytest.raises(xw.ImageError, match="selects none"):
        metrics.evaluate_folder(folder, model, start=10, **QUICK)
    with pytest.raises(xw.ParameterError, match="stride"):
        metrics.evaluate_folder(folder, model, stride=0, **QUICK)
    with pytest.raises(xw.ParameterError, match="did you mean 'deletion'"):
        metrics.evaluate_folder(folder, model, **{**QUICK, "metrics": ["deleton"]})
    with pytest.raises(MetricError, match="need the objects' boxes"):
        metrics.evaluate_folder(folder, model, **{**QUICK, "metrics": ["pointing"]})
    with pytest.raises(xw.MethodError):
        metrics.evaluate_folder(folder, model, **{**QUICK, "methods": ["gradcam++"]})
    out = tmp_path / "r.jsonl"
    metrics.evaluate_folder(folder, model, out=out, **{**QUICK, "methods": ["grad_cam"]})
    with pytest.raises(MetricError, match="differ in: methods"):
        metrics.evaluate_folder(folder, model, out=out, **QUICK)
    out.write_text(out.read_text().replace("\n", "\n{oops\n", 1))
    with pytest.raises(MetricError, match=r"line 2 .* is not JSON"):
        metrics.evaluate_folder(folder, model, out=out, **{**QUICK, "methods": ["grad_cam"]})


def test_summary_is_mean_and_t_interval() -> None:
    values = [0.2, 0.4, 0.3, None, 0.9]
    records = [{"image": f"{i}.png", "method": "m", "deletion": v} for i, v in enumerate(values)]
    records.append({"image": "x.png", "error": "ImageError: broken"})
    summary = metrics.summarize_records(records)
    row = summary.value("m", "deletion")
    defined = np.array([0.2, 0.4, 0.3, 0.9])
    half = stats.t.ppf(0.975, 3) * defined.std(ddof=1) / 2
    assert (row.n, row.undefined) == (4, 1)
    assert row.mean == pytest.approx(defined.mean())
    assert row.half_width == pytest.approx(half)
    assert summary.failed == [("x.png", None, "ImageError: broken")]
    lonely = metrics.summarize_records([{"image": "a", "method": "m", "insertion": 0.5}])
    assert math.isnan(lonely.value("m", "insertion").half_width)
    assert "| m | insertion | 1 | 0.500 | 0 |" in lonely.table()


def test_command_line(folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.jsonl"
    code = cli.main(["evaluate", str(folder), "--model", "resnet18", "--weights", "none",
                     "--methods", "grad_cam", "--metrics", "deletion",
                     "--pixels-per-step", "12544", "--out", str(out), "--stop", "2",
                     "--no-plots"])
    assert code == 0
    printed = capsys.readouterr()
    assert "| grad_cam | deletion | 2 |" in printed.out
    assert len(out.read_text().splitlines()) == 1 + 2
    assert "evaluate 2/2" in printed.err                # the progress bar
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["evaluate", str(empty), "--model", "resnet18", "--weights", "none"]) == 2
    assert "error: no image files" in capsys.readouterr().err
