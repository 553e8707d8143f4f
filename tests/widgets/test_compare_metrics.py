"""Compare.metrics: the deletion and insertion areas of every cell, batched, as a table."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from tiny_models import PlainNet, bundle

import xai_widgets as xw
from xai_widgets import metrics
from xai_widgets.errors import ParameterError, XaiError
from xai_widgets.metrics import AreaRow, AreaTable, table

METHODS = ["grad_cam", "grad_cam_pp", "saliency", "guided_backprop"]


def decisive(size: int = 16, seed: int = 0) -> xw.ModelBundle:
    """PlainNet with a sharpened head, so that the probabilities move as pixels go."""
    torch.manual_seed(seed)
    model = PlainNet(classes=5)
    with torch.no_grad():
        model.fc.weight.mul_(30)
    return bundle(model, size, classes=5)


def photo(size: int = 20) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)


def one_by_one(compare: xw.Compare, image: np.ndarray, **options) -> list[list[tuple]]:
    """Each cell's areas from deletion_insertion on its explanation alone."""
    out = []
    for row in compare.grid:
        out.append([])
        for e in row:
            r = metrics.deletion_insertion(e, image, **options)
            out[-1].append((r.deletion.auc.item(), r.insertion.auc.item()))
    return out


def areas(table: AreaTable) -> list[list[tuple]]:
    return [[(table.cell(r, c).deletion, table.cell(r, c).insertion)
             for c in range(len(table.columns))] for r in range(len(table.methods))]


def assert_same_areas(got: list[list[tuple]], expected: list[list[tuple]]) -> None:
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64),
                               torch.tensor(expected, dtype=torch.float64))


@pytest.fixture
def calls(monkeypatch) -> list[tuple[int, tuple[int, ...], str, str]]:
    """Every deletion_insertion call of the table: (maps, map shape, channels, polarity)."""
    seen: list[tuple[int, tuple[int, ...], str, str]] = []
    real = table.deletion_insertion

    def spy(source, images, maps, target, **options):
        seen.append((len(maps), tuple(maps.shape[1:]), options["channels"],
                     options["polarity"]))
        return real(source, images, maps, target, **options)

    monkeypatch.setattr(table, "deletion_insertion", spy)
    return seen


def test_batched_areas_equal_one_by_one(calls) -> None:
    image = photo()
    compare = xw.Compare(decisive(), image, methods=METHODS, classes="top3")
    result = compare.metrics(pixels_per_step=16, chunk_size=5)
    assert_same_areas(areas(result), one_by_one(compare, image, pixels_per_step=16))
    # one call per map shape and way of reading it: the CAMs (8×8, max |.|, positive) of
    # every class together, saliency (3×16×16, max |.|, absolute), guided backprop (sum |.|)
    assert sorted(calls) == [(3, (3, 16, 16), "max_abs", "absolute"),
                             (3, (3, 16, 16), "sum_abs", "absolute"),
                             (6, (8, 8), "max_abs", "positive")]
    spread = [row.deletion for row in result.rows]
    assert max(spread) - min(spread) > 0.01  # the areas tell the maps apart
    assert result.pixels_per_step == 16
    assert result.score == "probability"


def test_layers_and_models_as_columns() -> None:
    image = photo(40)
    by_layer = xw.Compare(decisive(), image, methods=["grad_cam", "saliency"],
                          layers=["features.1", "features"], classes=[2])
    result = by_layer.metrics(pixels_per_step=32, score="logit")
    assert_same_areas(areas(result), one_by_one(by_layer, image, pixels_per_step=32,
                                                score="logit"))
    assert result.columns == ("features.1", "features")
    # two models of different input sizes: each column on its own input
    by_model = xw.Compare([decisive(16), decisive(24, seed=1)], image,
                          methods=["grad_cam", "saliency"])
    result = by_model.metrics()
    expected = [[metrics.deletion_insertion(e, image).areas() for e in row]
                for row in by_model.grid]
    assert_same_areas(areas(result), [[(a["deletion"][0], a["insertion"][0]) for a in row]
                                      for row in expected])
    assert result.pixels_per_step is None  # the input widths, 16 and 24, differ
    assert "pixels per step" not in result.caption()


def test_every_method_and_column_is_in_the_table() -> None:
    compare = xw.Compare(decisive(), photo(), methods=METHODS, classes="top3")
    result = compare.metrics(pixels_per_step=64)
    labels = [row[0].method.label for row in compare.grid]
    titles = [title for title, _ in compare.columns]
    assert result.methods == tuple(labels)
    assert result.columns == tuple(titles)
    records = result.records()
    assert [(r["method"], r["column"]) for r in records] == \
        [(m, c) for m in labels for c in titles]
    assert set(records[0]) == {"method", "column", "deletion", "insertion"}
    text, markdown, page = repr(result), result.to_markdown(), result._repr_html_()
    for name in labels + titles:
        assert name in text and name in markdown and name in page
    assert markdown.count("\n| ") == len(labels)  # a line per method after the header
    assert page.count("<tr>") == len(labels) + 1
    assert page.count("<td") == len(labels) * len(titles)


class Cells(HTMLParser):
    """The <td> contents of an HTML table, row by row, tags kept."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.inside = False

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self.inside = True
            self.rows[-1].append("")
        elif tag == "b" and self.inside:
            self.rows[-1][-1] += "<b>"

    def handle_endtag(self, tag) -> None:
        if tag == "td":
            self.inside = False
        elif tag == "b" and self.inside:
            self.rows[-1][-1] += "</b>"

    def handle_data(self, data) -> None:
        if self.inside:
            self.rows[-1][-1] += data


def cells_of(page: str) -> list[list[str]]:
    parser = Cells()
    parser.feed(page)
    return [row for row in parser.rows if row]


def test_the_best_of_each_column_is_bold() -> None:
    values = {("A", "x"): (0.1, 0.5), ("A", "y"): (0.4, 0.2),
              ("B", "x"): (0.2, 0.9), ("B", "y"): (0.3, 0.2),
              ("C", "x"): (0.1, 0.3), ("C", "y"): (0.5, 0.1)}
    hand = AreaTable(("A", "B", "C"), ("x", "y"),
                     tuple(AreaRow(m, c, *values[m, c]) for m in "ABC" for c in "xy"),
                     "probability", 224)
    # x: lowest deletion A and C (tied), highest insertion B; y: B, then A and B (tied)
    assert hand.best(0) == ({0, 2}, {1})
    assert hand.best(1) == ({1}, {0, 1})
    assert cells_of(hand._repr_html_()) == [
        ["<b>0.100</b> / 0.500", "0.400 / <b>0.200</b>"],
        ["0.200 / <b>0.900</b>", "<b>0.300</b> / <b>0.200</b>"],
        ["<b>0.100</b> / 0.300", "0.500 / 0.100"]]
    assert hand.to_markdown().splitlines()[2:5] == [
        "| A | **0.100** / 0.500 | 0.400 / **0.200** |",
        "| B | 0.200 / **0.900** | **0.300** / **0.200** |",
        "| C | **0.100** / 0.300 | 0.500 / 0.100 |"]
    assert "0.200* / 0.900" not in repr(hand) and "0.200 / 0.900*" in repr(hand)
    assert "224 pixels per step" in hand._repr_html_()

    # on a real table, the bold cells are the minimum deletion and maximum insertion
    result = xw.Compare(decisive(), photo(), methods=METHODS, classes="top2").metrics(
        pixels_per_step=32)
    page = cells_of(result._repr_html_())
    for column in range(2):
        cells = [result.cell(row, column) for row in range(len(METHODS))]
        lowest = min(c.deletion for c in cells)
        highest = max(c.insertion for c in cells)
        for row, c in enumerate(cells):
            deletion, insertion = page[row][column].split(" / ")
            assert deletion.startswith("<b>") == (c.deletion == lowest)
            assert insertion.startswith("<b>") == (c.insertion == highest)


def test_the_maps_are_read_as_the_cells_show_them() -> None:
    image = photo()
    shown = xw.Compare(decisive(), image, methods=["saliency", "input_x_gradient"],
                       classes="top2", channels="sum", polarity="signed")
    result = shown.metrics(pixels_per_step=16)
    assert_same_areas(areas(result), one_by_one(shown, image, pixels_per_step=16,
                                                channels="sum", polarity="signed"))
    default = xw.Compare(decisive(), image, methods=["saliency", "input_x_gradient"],
                         classes="top2")
    as_displayed = areas(default.metrics(pixels_per_step=16))
    assert as_displayed[0] != areas(result)[0]  # saliency shows max |g|, not Σ g
    # channels/polarity as options override every method's display too
    assert_same_areas(areas(default.metrics(pixels_per_step=16, channels="sum",
                                            polarity="signed")), areas(result))


def test_cached_per_options_and_shown_under_the_figure() -> None:
    compare = xw.Compare(decisive(), photo(), methods=["grad_cam", "saliency"], classes="top2")
    assert all(not ax.get_xlabel() for ax in compare.figure().axes)
    seen: list[float] = []
    first = compare.metrics(pixels_per_step=32, progress=lambda f, _p: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) > 2
    assert compare.metrics(pixels_per_step=32) is first
    other = compare.metrics(pixels_per_step=32, score="logit")
    assert other is not first and compare.areas is other
    assert compare.metrics(pixels_per_step=32) is first and compare.areas is first
    figure = compare.figure()
    for row in range(2):
        for column in range(2):
            cell = first.cell(row, column)
            label = figure.axes[row * 3 + column + 1].get_xlabel()
            assert label == f"del {cell.deletion:.2f} · ins {cell.insertion:.2f}"
    assert all(not ax.get_xlabel() for ax in compare.figure(areas=False).axes)
    # an option that cannot be hashed (an image as the substrate) is computed, not cached
    gray = torch.full((1, 3, 16, 16), 0.5)
    assert compare.metrics(pixels_per_step=32, deletion_substrate=gray) is not \
        compare.metrics(pixels_per_step=32, deletion_substrate=gray)


@pytest.mark.parametrize(("options", "message"), [
    ({"pixels_per_step": 0}, r"pixels_per_step must be an integer in \[1, 256\]"),
    ({"pixels_per_step": 2.5}, "pixels_per_step must be an integer"),
    ({"score": "auc"}, "score must be 'probability' or 'logit'"),
    ({"chunk_size": 0}, "chunk_size must be a positive integer"),
    ({"deletion_substrat": "blur"}, "unknown option 'deletion_substrat'.*did you mean "
                                    "'deletion_substrate'"),
    ({"kinds": ("deletion",)}, "unknown option 'kinds'"),
    ({"insertion_substrate": "grey"}, "unknown substrate 'grey'"),
])
def test_bad_options_raise_the_metrics_errors(options, message) -> None:
    compare = xw.Compare(decisive(), photo(), methods=["grad_cam"], classes="top2")
    with pytest.raises(ParameterError, match=message) as raised:
        compare.metrics(**options)
    assert isinstance(raised.value, XaiError) and isinstance(raised.value, ValueError)
    assert compare.areas is None and not compare._tables
