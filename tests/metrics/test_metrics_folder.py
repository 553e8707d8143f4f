"""Metrics over a folder: resume, shards, unreadable images, labels and boxes, bad inputs
refused before the first image, outputs that are never lost or taken for images, the lock,
reproducible headers, warnings, the summary and its confidence intervals, and the command
line."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from metric_models import RegionSum
from PIL import Image
from scipy import stats
from test_contract import assert_same, snapshot
from tiny_models import PlainNet, bundle

import xai_widgets as xw
from xai_widgets import cli, metrics
from xai_widgets.metrics import Cancelled, MetricError
from xai_widgets.metrics import folder as folder_module

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
    assert set(records["a.png"]) >= {"amount@0", "reidentified@0", "sanity_spearman",
                                      "sanity_spearman_abs", "sanity_ssim"}
    assert records["a.png"]["reidentified@0"] in (0.0, 1.0)
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
    with pytest.raises(MetricError, match="pointing game needs the objects' boxes"):
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
    assert "| m | insertion ↑ | 1 | 0.500 | 0 |" in lonely.table()
    assert str(lonely) == lonely.table()


def test_command_line(folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.jsonl"
    code = cli.main(["evaluate", str(folder), "--model", "resnet18", "--weights", "none",
                     "--methods", "grad_cam", "--metrics", "deletion",
                     "--pixels-per-step", "12544", "--out", str(out), "--stop", "2",
                     "--no-plots"])
    assert code == 0
    printed = capsys.readouterr()
    assert "| grad_cam | deletion ↓ | 2 |" in printed.out
    assert len(out.read_text().splitlines()) == 1 + 2
    assert "evaluate: 100%" in printed.err and "2/2" in printed.err    # tqdm's bar
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["evaluate", str(empty), "--model", "resnet18", "--weights", "none"]) == 2
    assert "error: no image files" in capsys.readouterr().err


def quick(folder: Path, model, out: Path, **changes):
    return metrics.evaluate_folder(folder, model, out=out, **{**QUICK, **changes})


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"pixels_per_step": 0}, xw.ParameterError, "pixels_per_step must be an integer >= 1"),
    ({"pixels_per_step": 257}, xw.ParameterError, r"in \[1, 256\] \(the input has 16×16"),
    ({"chunk_size": 0}, xw.ParameterError, "chunk_size must be a positive integer"),
    ({"method_params": {"grad_cam": {"steps": 3}}}, xw.ParameterError,
     "grad_cam has no parameter 'steps'"),
    ({"method_params": {"score_cam": {}}}, xw.ParameterError, "not one of the methods"),
    ({"insertion_substrate": "blurr"}, xw.ParameterError, "did you mean 'blur'"),
    ({"score": "logits"}, xw.ParameterError, "score must be 'probability' or 'logit'"),
    ({"tolerance": -1}, xw.ParameterError, "tolerance is a number of pixels >= 0"),
    ({"thresholds": [1.5]}, xw.ParameterError, r"thresholds must be values in \[0, 1\)"),
    ({"sanity_stages": 0}, xw.ParameterError, "stages is None, an integer >= 1"),
    ({"layer": "nosuch"}, xw.LayerError, "unknown layer 'nosuch'"),
    ({"methods": ["saliency"], "layer": "features"}, xw.ParameterError,
     "none of saliency takes a layer"),
    ({"labels": "missing.csv"}, MetricError, "no labels file at 'missing.csv'"),
    ({"pixels": 3}, xw.ParameterError, "unknown setting 'pixels'.*did you mean 'pixels_per_step'"),
])
def test_settings_are_refused_before_the_first_image(folder: Path, model, tmp_path: Path,
                                                     changes, error, message) -> None:
    # issue 10: these once started the run and wrote one failure record per image
    out = tmp_path / "r.jsonl"
    with pytest.raises(error, match=message):
        quick(folder, model, out, **changes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]     # nothing written


def test_settings_are_one_frozen_object(folder: Path, model, tmp_path: Path) -> None:
    settings = metrics.EvaluationSettings(methods="grad_cam, saliency",
                                          metrics="insertion,deletion", pixels_per_step=64)
    assert (settings.methods, settings.metrics) == (("grad_cam", "saliency"),
                                                   ("deletion", "insertion"))
    assert settings.params() == {"grad_cam": {}, "saliency": {}}
    smooth = metrics.EvaluationSettings(methods=["smoothgrad"],
                                        method_params={"smoothgrad": {"n_samples": 4}})
    assert smooth.method_params == {"smoothgrad": {"n_samples": 4}}
    assert smooth.params()["smoothgrad"] == {**xw.get_method("smoothgrad").defaults(),
                                             "n_samples": 4}
    assert smooth.updated(methods=["smoothgrad", "saliency"]).params()["saliency"] == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.pixels_per_step = 0  # type: ignore[misc]
    with pytest.raises(xw.ParameterError, match="pixels_per_step"):
        settings.updated(pixels_per_step=0)
    by_object = metrics.evaluate_folder(folder, model, settings, out=tmp_path / "a.jsonl",
                                        progress=False, plots=False)
    by_keywords = quick(folder, model, tmp_path / "b.jsonl")
    assert by_object.out.read_bytes() == by_keywords.out.read_bytes()


def test_an_out_that_is_not_a_results_file_is_refused_unchanged(folder: Path, model,
                                                                 tmp_path: Path) -> None:
    # issue 10: a notes file lost its last line, a photo was corrupted, before the refusal
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"first line\nlast line, no newline")
    single = tmp_path / "single.txt"
    single.write_bytes(b"one line, no newline")
    photo = folder / "a.png"
    for path in (notes, single, photo):
        content = path.read_bytes()
        with pytest.raises(MetricError, match="is not a results file"):
            quick(folder, model, path)
        assert path.read_bytes() == content
        assert not path.with_name(path.name + ".lock").exists()
    with pytest.raises(MetricError, match="is a folder; out is the results file to write"):
        quick(folder, model, tmp_path)
    # a header torn by a kill before its newline is ours: the run starts again
    whole = quick(folder, model, tmp_path / "whole.jsonl").out.read_bytes()
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(whole[:40])
    quick(folder, model, torn)
    assert torn.read_bytes() == whole


def test_outputs_inside_the_folder_are_never_images(folder: Path, model, capsys) -> None:
    # issue 10: the plot of a run placed in the folder was evaluated as an image by the next
    out = folder / "results.jsonl"
    first = quick(folder, model, out, plots=True, methods=["grad_cam"])
    assert [p.name for p in first.plots] == ["results.grad_cam.png"]
    again = quick(folder, model, out, plots=True, methods=["grad_cam"])
    assert (again.written, again.skipped, again.ignored) == (0, 6, ["notes.txt"])
    other = quick(folder, model, folder / "sub" / "shard1.jsonl", plots=True,
                  methods=["grad_cam"], start=1, stride=2)
    assert [p.name for p in other.plots] == ["shard1.grad_cam.png"]
    Image.new("RGB", (16, 16)).save(folder / "holiday.grad_cam.png")   # a photo, not a plot
    images, _ = metrics.list_images(folder)
    assert [p.relative_to(folder).as_posix() for p in images] == [
        "a.png", "b.png", "broken.jpg", "c.png", "d.png", "holiday.grad_cam.png", "sub/e.png"]
    assert capsys.readouterr().err == ""                                # progress=False


LOCK_HOLDER = """
import sys
from pathlib import Path
from xai_widgets.metrics import folder
with folder._locked(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_writer_is_refused_by_the_lock(folder: Path, model, tmp_path: Path) -> None:
    # issue 10: two processes on one out both succeeded, and every record appeared twice
    out = tmp_path / "r.jsonl"
    quick(folder, model, out, stop=1)
    content = out.read_bytes()
    lock = tmp_path / "r.jsonl.lock"
    assert not lock.exists()
    with subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            with pytest.raises(MetricError, match=rf"being written by another run \(pid "
                                                  rf"{holder.pid} on .* holds the lock file "
                                                  r"'.*r\.jsonl\.lock'\)"):
                quick(folder, model, out)
            assert out.read_bytes() == content
        finally:
            holder.kill()   # a killed holder: the system drops its lock, its file stays
    assert lock.exists()
    run = quick(folder, model, out)       # a later stop extends the same shard
    assert (run.skipped, run.written, len(run.failed)) == (1, 2 * 4, 1)
    assert not lock.exists()


def test_summarize_refuses_a_record_twice(folder: Path, model, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    quick(folder, model, out, stop=2, methods=["grad_cam"])
    with pytest.raises(MetricError, match=r"record of image 'a.png', method 'grad_cam' appears "
                                          r"twice \(in '.*r.jsonl' and '.*r.jsonl'\)"):
        metrics.summarize(out, out)
    lines = out.read_text().splitlines(keepends=True)
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_text("".join([*lines, lines[-1]]))
    with pytest.raises(MetricError, match=r"record of image 'b\.png', method 'grad_cam' appears"):
        metrics.summarize(doubled)


def test_model_digest_by_hand() -> None:
    linear = torch.nn.Linear(2, 1)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, -2.0]]))
        linear.bias.fill_(0.5)
    expected = hashlib.sha256(b"weight:torch.float32:(1, 2);" +
                              np.array([1.0, -2.0], dtype=np.float32).tobytes() +
                              b"bias:torch.float32:(1,);" +
                              np.array([0.5], dtype=np.float32).tobytes()).hexdigest()
    assert metrics.model_digest(linear) == expected


def test_the_header_makes_a_run_reproducible(folder: Path, tmp_path: Path) -> None:
    # issue 10: a resume with another random model, seed or shard silently mixed them
    torch.manual_seed(0)
    first = bundle(PlainNet().eval(), size=16, classes=5)
    torch.manual_seed(1)
    other = bundle(PlainNet().eval(), size=16, classes=5)
    out = tmp_path / "r.jsonl"
    settings = metrics.EvaluationSettings(methods=["grad_cam"], metrics="deletion",
                                          pixels_per_step=64, start=1, stride=2, seed=7)
    options = {"out": out, "progress": False, "plots": False}
    metrics.evaluate_folder(folder, first, settings, **options)
    header = json.loads(out.read_text().splitlines()[0])
    assert header["shard"] == {"start": 1, "stride": 2}
    assert header["seed"] == 7
    assert header["model"] == {"name": "PlainNet",
                               "weights_sha256": metrics.model_digest(first.model)}
    assert metrics.model_digest(first.model) != metrics.model_digest(other.model)
    content = out.read_bytes()
    for model, changes, differ in ((other, {}, "model"), (first, {"seed": 8}, "seed"),
                                   (first, {"stride": 3}, "shard")):
        with pytest.raises(MetricError, match=rf"\(they differ in: {differ}\)"):
            metrics.evaluate_folder(folder, model, settings.updated(**changes), **options)
        assert out.read_bytes() == content
    assert metrics.evaluate_folder(folder, first, settings, **options).written == 0


def test_any_failure_to_read_an_image_is_its_record(folder: Path, model, tmp_path: Path,
                                                    monkeypatch) -> None:
    # issue 10: a malformed EXIF tag (struct.error) or a file name that is not UTF-8
    # (UnicodeEncodeError while writing) stopped the run at that image on every retry
    odd = os.fsdecode(b"caf\xe9.png")
    (folder / odd).write_bytes((folder / "a.png").read_bytes())
    real = folder_module.to_pil

    def exif_error(item: object, index: int = 0):
        if Path(str(item)).name == "c.png":
            raise struct.error("unpack requires a buffer of 4 bytes")
        return real(item, index)

    monkeypatch.setattr(folder_module, "to_pil", exif_error)
    out = tmp_path / "r.jsonl"
    run = quick(folder, model, out, methods=["grad_cam"])
    raw = out.read_bytes()
    records = {r["image"]: r for r in map(json.loads, raw.decode("utf-8").splitlines()[1:])}
    assert records["c.png"] == {"image": "c.png",
                                "error": "error: unpack requires a buffer of 4 bytes"}
    assert records[odd]["method"] == "grad_cam" and records[odd]["deletion"] is not None
    assert b'"caf\\udce9.png"' in raw
    assert [f[0] for f in run.failed] == ["broken.jpg", "c.png"]
    assert "d.png" in records and "sub/e.png" in records          # the run went on
    assert quick(folder, model, out, methods=["grad_cam"]).written == 0


def test_a_constant_map_is_flagged_in_its_record(folder: Path, tmp_path: Path) -> None:
    # issue 10: an all-zero map was measured silently (its pixels tie: raster order)
    blind = bundle(RegionSum(torch.zeros(16, 16, dtype=torch.bool)), size=16)
    out = tmp_path / "r.jsonl"
    run = quick(folder, blind, out, methods=["saliency"], metrics=["deletion"], stop=1)
    record = json.loads(out.read_text().splitlines()[1])
    assert "the map is constant (value 0): the pixels are deleted and inserted in raster " \
           "order; the result says nothing about the method" in record["warnings"]
    assert "1 records with warnings (in the table):" in run.summary.table()
    assert run.summary.warned[0][:2] == ("a.png", "saliency")


@pytest.mark.parametrize(("name", "content"), [
    ("notes.txt", b"hello\nworld\n"), ("empty.jsonl", b""), ("latin.txt", b"caf\xe9\n"),
    ("photo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")])
def test_summarize_says_what_is_not_a_results_file(tmp_path: Path, name: str,
                                                   content: bytes) -> None:
    # issue 10: a non-JSON file raised UnicodeDecodeError
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MetricError, match="is not a results file of evaluate_folder"):
        metrics.summarize(path)


def test_proportions_get_wilson_intervals_inside_0_1() -> None:
    # issue 9: the pointing game's t interval was 0.750 ± 0.796
    records = [{"image": f"{i}.png", "method": "m", "pointing": float(hit),
                "reidentified@0.5": 1.0} for i, hit in enumerate([1, 1, 1, 0])]
    summary = metrics.summarize_records(records)
    row = summary.value("m", "pointing")
    expected = stats.binomtest(3, 4).proportion_ci(method="wilson")
    assert row.interval == "wilson"
    assert (row.mean, row.low, row.high) == pytest.approx((0.75, expected.low, expected.high))
    every = summary.value("m", "reidentified@0.5")
    assert every.high == 1.0 and 0 < every.low < 1
    assert "| m | pointing ↑ | 4 | 0.750 [0.301, 0.954] | 0 |" in str(summary)
    assert all(math.isnan(bound) for bound in metrics.wilson(0, 0))        # no values
