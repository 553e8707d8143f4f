"""Compare of insecurities: rows are images × layers × difficulty/attribution choices, the
panels are the difficulty map and the top pairs of each row, exactly the result's pictures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import InplaceResNet, bundle

import xai_widgets as xw
from xai_widgets import deliberative as dl


@pytest.fixture(scope="module")
def resnet() -> xw.ModelBundle:
    torch.manual_seed(0)
    return bundle(InplaceResNet(6).eval(), 16, classes=6)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_panels_are_the_pictures_of_the_right_pairs(resnet, images) -> None:
    choices = ["entropy", ("cs", "gradient_hessian"),
               {"difficulty": "entropy", "normalise": False, "per_cell": 2}]
    grid = xw.Compare(resnet, images, insecurities=choices, pairs=2, area=0.2, top_k=4)
    analysis = dl.Analysis(resnet, images, top_classes=4)
    expected = [analysis.result(i, **options) for i in range(2) for options in (
        {"difficulty": "entropy"}, {"difficulty": "cs", "attribution": "gradient_hessian"},
        {"difficulty": "entropy", "normalise": False, "per_cell": 2})]
    panels = grid.panels()
    assert len(panels) == len(grid.pair_rows) == 6
    for row, cells, result in zip(grid.pair_rows, panels, expected, strict=True):
        assert row.result.name == result.name
        assert (row.result.difficulty.kind, row.result.attribution) == \
            (result.difficulty.kind, result.attribution)
        assert len(result.pairs) >= 2  # the comparison below must cover real pairs
        assert len(cells) == 3
        np.testing.assert_array_equal(cells[0][1], result.difficulty_picture())
        for (title, picture), pair in zip(cells[1:], result.pairs[:2], strict=True):
            assert title == f"{pair.names[0]} –\n{pair.names[1]} · {pair.score:.3g}"
            np.testing.assert_array_equal(picture, result.picture(pair, 0.2, "ours"))
    assert [row.title for row in grid.pair_rows[:3]] == [
        f"{expected[0].name} · entropy, gradient", f"{expected[0].name} · cs, gradient_hessian",
        f"{expected[0].name} · entropy, gradient · raw product"]


def test_layers_make_rows_and_the_original_style_darkens(resnet, images, tmp_path) -> None:
    grid = xw.Compare(resnet, images[:1], insecurities="entropy", layers=["layer1", "layer2"],
                      pairs=1, style="original")
    assert [row.result.layer for row in grid.pair_rows] == ["layer1", "layer2"]
    assert [row.title for row in grid.pair_rows] == ["layer1 · entropy, gradient",
                                                     "layer2 · entropy, gradient"]
    for row, cells in zip(grid.pair_rows, grid.panels(), strict=True):
        pair = row.result.pairs[0]
        np.testing.assert_array_equal(cells[1][1], row.result.picture(pair, 0.1, "original"))
    figure = grid.figure()
    assert len([ax for ax in figure.axes if ax.images]) == 4  # 2 rows × (difficulty + 1 pair)
    assert grid.save(tmp_path / "pairs.png").stat().st_size > 1000


def test_a_row_with_fewer_pairs_leaves_its_columns_empty(resnet, images) -> None:
    grid = xw.Compare(resnet, images[:1], insecurities="entropy", pairs=40)
    shown = len(grid.pair_rows[0].result.pairs)
    assert shown < 40
    assert len(grid.panels()[0]) == 1 + shown
    assert len([ax for ax in grid.figure().axes if ax.images]) == 1 + shown


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"insecurities": []}, xw.ParameterError, "at least one row"),
    ({"insecurities": 42}, xw.ParameterError, "a row of insecurities is a difficulty"),
    ({"insecurities": "entropie"}, xw.ParameterError, "unknown difficulty 'entropie'"),
    ({"insecurities": ("entropy", "cs")}, xw.ParameterError, "unknown attribution 'cs'"),
    ({"insecurities": [{"difficulty": "cs", "atribution": "gradient"}]}, xw.ParameterError,
     "unknown option 'atribution'.*attribution"),
    ({"insecurities": "hp"}, xw.ParameterError, "needs a hardness predictor"),
    ({"insecurities": "entropy", "pairs": 0}, xw.ParameterError, "an integer >= 1"),
    ({"insecurities": "entropy", "area": 2.0}, xw.ParameterError, "area is the fraction"),
    ({"insecurities": "entropy", "style": "paper"}, xw.ParameterError, "'ours' or 'original'"),
    ({"insecurities": "entropy", "methods": ["grad_cam"]}, xw.ParameterError,
     "either explanations .* or insecurities"),
    ({"insecurities": "entropy", "colormap": "gray"}, xw.ParameterError, "not both"),
    ({"pairs": 2}, xw.ParameterError, "give insecurities= too"),
    ({"insecurities": "entropy", "top_k": 1}, xw.ParameterError, "a pair needs two classes"),
    ({"insecurities": "entropy", "layers": ["layer9"]}, xw.LayerError, "layer9"),
])
def test_bad_input_is_refused_clearly(resnet, images, options, error, message) -> None:
    with pytest.raises(error, match=message):
        xw.Compare(resnet, images, **options)


def test_one_model_and_no_metrics(resnet, images) -> None:
    with pytest.raises(xw.ParameterError, match="shows one model, got 2"):
        xw.Compare([resnet, resnet], images, insecurities="entropy")
    grid = xw.Compare(resnet, images[:1], insecurities="entropy")
    with pytest.raises(xw.ParameterError, match="has none"):
        grid.metrics()
    explained = xw.Compare(resnet, images[:1], methods=["grad_cam"], classes="top2")
    with pytest.raises(xw.ParameterError, match="lays out explanations"):
        explained.panels()
