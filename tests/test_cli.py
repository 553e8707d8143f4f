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
