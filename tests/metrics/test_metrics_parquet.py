"""Parquet results (``out="….parquet"``): the records and the summary of the JSON-lines run,
parts written as the run goes, resume after an interruption and after a kill, the header
checked, outputs that are not ours refused unchanged, the lock, the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from support import random_photos
from tiny_models import PlainNet, bundle

from xai_widgets import cli, metrics
from xai_widgets.metrics import Cancelled, MetricError, parquet
from xai_widgets.metrics.summary import read_results

pytest.importorskip("pyarrow")

QUICK = {"methods": ["grad_cam", "saliency"], "metrics": ["deletion", "insertion"],
         "pixels_per_step": 64, "progress": False, "plots": False}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Five 16×16 photos and a broken JPEG."""
    return random_photos(tmp_path / "images", "abcde")


@pytest.fixture
def model():
    torch.manual_seed(0)
    return bundle(PlainNet().eval(), size=16, classes=5)


@pytest.fixture
def reference(folder: Path, model, tmp_path: Path) -> metrics.FolderRun:
    return metrics.evaluate_folder(folder, model, out=tmp_path / "lines.jsonl", **QUICK)


def test_parquet_holds_the_records_and_summary_of_json_lines(
        folder: Path, model, tmp_path: Path, reference, monkeypatch) -> None:
    monkeypatch.setattr(parquet, "ROWS", 4)
    run = metrics.evaluate_folder(folder, model, out=tmp_path / "r.parquet", **QUICK)
    assert read_results(run.out) == read_results(reference.out)
    assert str(run.summary) == str(reference.summary)
    assert str(metrics.summarize(run.out)) == str(metrics.summarize(reference.out))
    names = [p.name for p in parquet.parts(run.out)]
    assert names == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]  # 11 rows
    import pyarrow.parquet as pq

    table = pq.read_table(run.out)                      # any Parquet reader: one table
    assert table.num_rows == 2 * 5 + 1
    assert table.column("error").null_count == 2 * 5
    assert pq.ParquetFile(run.out / names[0]).metadata.num_row_groups == 1
    assert metrics.summarize(run.out / names[0]).records == 4          # a part alone


def test_an_interrupted_parquet_run_resumes(folder: Path, model, tmp_path: Path, reference,
                                            monkeypatch) -> None:
    monkeypatch.setattr(parquet, "ROWS", 3)
    out = tmp_path / "r.parquet"
    lock = tmp_path / "r.parquet.lock"
    held = []

    def stop_after_two(fraction: float, _preview: object) -> None:
        held.append(lock.exists())
        if fraction >= 2 / 6:
            raise Cancelled

    with pytest.raises(Cancelled):
        metrics.evaluate_folder(folder, model, out=out, **{**QUICK, "progress": stop_after_two})
    assert held == [True, True] and not lock.exists()
    assert len(read_results(out)) == 1 + 2 + 2                   # header, a.png, b.png
    assert len(parquet.parts(out)) == 2                  # 3 records, then 1 at the interruption
    run = metrics.evaluate_folder(folder, model, out=out, **QUICK)
    assert run.skipped == 2
    assert read_results(out) == read_results(reference.out)


def test_a_killed_parquet_run_loses_nothing(folder: Path, model, tmp_path: Path, reference,
                                            monkeypatch) -> None:
    """Records not yet in a part are in the journal; a kill between writing a part and
    cutting the journal leaves them twice, and the resume keeps them once."""
    monkeypatch.setattr(parquet, "ROWS", 4)
    out = tmp_path / "r.parquet"
    monkeypatch.setattr(parquet.Parts, "flush", lambda self: None)     # killed: no part yet

    def killed(fraction: float, _preview: object) -> None:
        if fraction >= 4 / 6:
            raise Cancelled

    with pytest.raises(Cancelled):
        metrics.evaluate_folder(folder, model, out=out, **{**QUICK, "progress": killed})
    monkeypatch.undo()
    monkeypatch.setattr(parquet, "ROWS", 4)
    journal = (out / parquet.PENDING).read_bytes()
    assert not parquet.parts(out) and journal.count(b"\n") == 1 + 1 + 3 * 2
    metrics.evaluate_folder(folder, model, out=out, **QUICK)
    (out / parquet.PENDING).write_bytes(journal)          # as if killed before the cut
    assert read_results(out) == read_results(reference.out)
    run = metrics.evaluate_folder(folder, model, out=out, **QUICK)
    assert (run.written, run.skipped) == (0, 6)
    assert (out / parquet.PENDING).read_bytes().count(b"\n") == 1        # the header only
    assert read_results(out) == read_results(reference.out)


def test_parquet_outputs_are_checked_before_anything_changes(folder: Path, model,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    metrics.evaluate_folder(folder, model, out=out, **QUICK)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(MetricError, match=r"other settings .*differ in: metrics"):
        metrics.evaluate_folder(folder, model, out=out, **{**QUICK, "metrics": ["deletion"]})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    notes = tmp_path / "notes.parquet"
    notes.mkdir()
    (notes / "mine.txt").write_text("mine")
    single = tmp_path / "single.parquet"
    single.write_bytes(b"PAR1 not ours")
    for taken in (notes, single):
        with pytest.raises(MetricError, match="not a Parquet results folder"):
            metrics.evaluate_folder(folder, model, out=taken, **QUICK)
    assert [p.name for p in notes.iterdir()] == ["mine.txt"]
    assert single.read_bytes() == b"PAR1 not ours"


def test_parquet_inside_the_folder_is_never_an_image(folder: Path, model, tmp_path: Path,
                                                     monkeypatch) -> None:
    monkeypatch.setattr(parquet, "ROWS", 2)
    run = metrics.evaluate_folder(folder, model, out=folder / "r.parquet",
                                  **{**QUICK, "plots": True})
    again = metrics.evaluate_folder(folder, model, out=folder / "r.parquet", **QUICK)
    assert (again.written, again.skipped, again.ignored) == (0, 6, [])
    assert [p.name for p in run.plots] == ["r.grad_cam.png", "r.saliency.png"]


def test_parquet_without_pyarrow_says_what_to_install(folder: Path, model, tmp_path: Path,
                                                      monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MetricError, match=r"need pyarrow: pip install "
                                          r"\"xai-widgets\[parquet\]\""):
        metrics.evaluate_folder(folder, model, out=tmp_path / "r.parquet", **QUICK)
    assert not (tmp_path / "r.parquet").exists()                    # refused before any work


def test_summarize_reads_parquet_on_the_command_line(folder: Path, model, tmp_path: Path,
                                                     reference, capsys) -> None:
    out = tmp_path / "r.parquet"
    metrics.evaluate_folder(folder, model, out=out, **QUICK)
    capsys.readouterr()
    assert cli.main(["summarize", str(out)]) == 0
    from_parquet = capsys.readouterr().out
    assert cli.main(["summarize", str(reference.out)]) == 0
    assert from_parquet == capsys.readouterr().out
    assert "| grad_cam | deletion" in from_parquet
