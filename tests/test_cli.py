"""The command line, in process and as ``python -m xai_widgets``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from xai_widgets import cli


def photo(tmp_path) -> str:
    path = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_explain_writes_the_picture_and_the_raw_map(tmp_path, capsys) -> None:
    out, raw = tmp_path / "map.png", tmp_path / "map.npy"
    code = cli.main(["explain", photo(tmp_path), "--model", "resnet18", "--weights", "none",
                     "--method", "grad_cam", "--target", "281", "--layer", "layer3",
                     "--out", str(out), "--raw", str(raw), "--cmap", "viridis"])
    assert code == 0
    assert Image.open(out).size[0] > 200
    assert np.load(raw).shape == (1, 14, 14)
    assert "Grad-CAM · tabby" in capsys.readouterr().out


def test_errors_are_one_clear_line(tmp_path, capsys) -> None:
    code = cli.main(["explain", photo(tmp_path), "--model", "resnet18", "--weights", "none",
                     "--layer", "layer9"])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: unknown layer 'layer9'; did you mean 'layer4'")
    assert error.count("\n") == 1
    assert cli.main(["explain", str(tmp_path / "missing.jpg"), "--model", "resnet18",
                     "--weights", "none"]) == 2
    assert "no file at" in capsys.readouterr().err


def test_parameters_are_parsed(tmp_path, capsys) -> None:
    code = cli.main(["explain", photo(tmp_path), "--model", "resnet18", "--weights", "none",
                     "--param", "steps=3"])
    assert code == 2
    assert "grad_cam has no parameter 'steps'" in capsys.readouterr().err


def test_module_entry_point_lists_methods_and_layers() -> None:
    listing = subprocess.run([sys.executable, "-m", "xai_widgets", "methods"], check=True,
                             capture_output=True, text=True).stdout
    assert "grad_cam" in listing and "guided_backprop" in listing
    layers = subprocess.run([sys.executable, "-m", "xai_widgets", "layers", "--model",
                             "resnet18", "--weights", "none"], check=True, capture_output=True,
                            text=True).stdout
    assert "layer4 (Sequential, 512×7×7) <- default" in layers


EVALUATE = ["--model", "resnet18", "--weights", "none", "--metrics", "deletion",
            "--pixels-per-step", "12544", "--no-plots", "--no-progress"]


def images(tmp_path) -> str:
    folder = tmp_path / "images"
    folder.mkdir()
    photo(folder)
    return str(folder)


def test_evaluate_refuses_an_out_that_is_not_a_results_file(tmp_path, capsys) -> None:
    folder = images(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"my notes\nthe last line")
    assert cli.main(["evaluate", folder, *EVALUATE, "--out", str(notes)]) == 2
    assert "notes.txt' exists and is not a results file" in capsys.readouterr().err
    assert notes.read_bytes() == b"my notes\nthe last line"
    assert cli.main(["evaluate", folder, *EVALUATE, "--out", str(tmp_path)]) == 2
    assert "is a folder; out is the results file to write" in capsys.readouterr().err
    assert cli.main(["summarize", str(notes)]) == 2
    assert "is not a results file of evaluate_folder" in capsys.readouterr().err


def test_evaluate_method_parameters_are_checked_first(tmp_path, capsys) -> None:
    folder, out = images(tmp_path), tmp_path / "r.jsonl"
    assert cli.main(["evaluate", folder, *EVALUATE, "--out", str(out),
                     "--param", "grad_cam.steps=3"]) == 2
    assert "grad_cam has no parameter 'steps'" in capsys.readouterr().err
    assert cli.main(["evaluate", folder, *EVALUATE, "--out", str(out), "--param", "steps=3"]) == 2
    assert "must name the method: METHOD.NAME=VALUE" in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_with_random_weights_is_reproducible_by_its_seed(tmp_path, capsys) -> None:
    # issue 10: --weights none drew another model in every process, and a resume mixed them
    folder, out = images(tmp_path), tmp_path / "r.jsonl"
    assert cli.main(["evaluate", folder, *EVALUATE, "--out", str(out), "--seed", "3"]) == 0
    assert cli.main(["evaluate", folder, *EVALUATE, "--out", str(out), "--seed", "3"]) == 0
    assert "0 records written, 1 images already done" in capsys.readouterr().out
    content = out.read_bytes()
    assert cli.main(["evaluate", folder, *EVALUATE, "--out", str(out), "--seed", "4"]) == 2
    assert "(they differ in: model, seed)" in capsys.readouterr().err
    assert out.read_bytes() == content
    assert cli.main(["summarize", str(out)]) == 0
    assert "| grad_cam | deletion ↓ | 1 |" in capsys.readouterr().out


def test_explain_refuses_bad_outputs_before_any_work(tmp_path, capsys) -> None:
    image = photo(tmp_path)
    base = ["explain", image, "--model", "resnet18", "--weights", "none"]
    cases = {
        str(tmp_path / "missing" / "map.png"): "does not exist",
        str(tmp_path): "is a folder",
        str(tmp_path / "map.txt"): "must end in .png",
    }
    for out, message in cases.items():
        assert cli.main([*base, "--out", out]) == 2
        assert message in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "m.png"), "--raw",
                     str(tmp_path / "raw.png")]) == 2
    assert "must end in .npy" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "m.png"), "--opacity", "5"]) == 2
    assert "opacity" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "m.png"), "--cmap", "nosuch"]) == 2
    assert "unknown colormap 'nosuch'" in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists() and not (tmp_path / "map.txt").exists()
