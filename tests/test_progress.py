"""Long calls show a progress bar (tqdm) unless told not to."""

from __future__ import annotations

import torch
from tiny_models import PlainNet, bundle

import xai_widgets as xw


def test_an_iterative_method_shows_a_progress_bar(capsys) -> None:
    x = torch.randn(1, 3, 16, 16)
    xw.explain(bundle(PlainNet()), x, "integrated_gradients", n_steps=8, chunk_size=2)
    bar = capsys.readouterr().err  # tqdm draws at most every 0.1 s: the first state, at least
    assert "Integrated gradients:" in bar and "%|" in bar
    xw.explain(bundle(PlainNet()), x, "integrated_gradients", n_steps=8, progress=False)
    assert capsys.readouterr().err == ""
    xw.explain(bundle(PlainNet()), x, "grad_cam")  # one pass: no bar
    assert capsys.readouterr().err == ""


def test_a_callable_gets_the_fractions_instead(capsys) -> None:
    seen: list[float] = []
    xw.explain(bundle(PlainNet()), torch.randn(1, 3, 16, 16), "integrated_gradients",
               n_steps=8, chunk_size=2, progress=lambda fraction, _preview: seen.append(fraction))
    assert seen == [0.25, 0.5, 0.75, 1.0]
    assert capsys.readouterr().err == ""


def test_compare_metrics_shows_a_progress_bar(capsys) -> None:
    grid = xw.Compare(bundle(PlainNet(), classes=5), torch.randn(1, 3, 16, 16),
                      methods=["grad_cam", "saliency"], classes="top2")
    capsys.readouterr()
    grid.metrics(pixels_per_step=64)
    assert "deletion/insertion" in capsys.readouterr().err
    grid.metrics(pixels_per_step=32, progress=False)
    assert "deletion/insertion" not in capsys.readouterr().err
