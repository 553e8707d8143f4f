"""Pointing game and energy-based pointing game on synthetic images with a known object."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_contract import assert_same, snapshot
from tiny_models import ClassMapNet, bundle

import xai_widgets as xw
from xai_widgets import metrics
from xai_widgets.metrics import MetricError


def scene(size: int = 24, box: tuple[int, int, int, int] = (14, 4, 20, 10)) -> torch.Tensor:
    """A dim noisy image with a bright square object in channel 0 at ``box`` (x0, y0, x1, y1)."""
    generator = torch.Generator().manual_seed(3)
    x = 0.02 * torch.rand(1, 3, size, size, generator=generator)
    x0, y0, x1, y1 = box
    x[0, 0, y0:y1, x0:x1] = 1.0
    return x


def test_cam_points_at_the_object_of_a_synthetic_image() -> None:
    # ClassMapNet: the logit of class c is mean(relu(x_c)) and its CAM is relu(x_c)
    model = ClassMapNet()
    before = snapshot(model)
    x = scene()
    e = xw.explain(bundle(model, size=24), x, "cam", target=0)
    hit = metrics.pointing_game(e, boxes=(14, 4, 20, 10), tolerance=0)
    assert hit.hits.tolist() == [1.0]
    assert 4 <= int(hit.points[0, 0]) < 10 and 14 <= int(hit.points[0, 1]) < 20
    miss = metrics.pointing_game(e, boxes=(0, 14, 6, 20), tolerance=0)
    assert miss.hits.tolist() == [0.0]
    energy = metrics.energy_pointing_game(e, boxes=(14, 4, 20, 10))
    object_energy = 36.0
    background = float(x[0, 0].sum()) - object_energy
    expected = object_energy / (object_energy + background)
    torch.testing.assert_close(energy, torch.tensor([expected]))
    assert float(energy[0]) > 0.8
    assert_same(before, snapshot(model))


def test_tolerance_is_a_euclidean_distance_in_pixels() -> None:
    maps = torch.zeros(1, 16, 16)
    maps[0, 10, 12] = 1.0                      # the maximum point: row 10, column 12
    box = (4, 4, 9, 8)                         # columns 4..8, rows 4..7: nearest (7, 8)
    distance = math.hypot(10 - 7, 12 - 8)      # 5 pixels
    result = metrics.pointing_game(maps, boxes=box, size=(16, 16), tolerance=5.0)
    assert result.hits.tolist() == [1.0]
    assert result.distances.tolist() == [pytest.approx(distance)]
    assert result.points.tolist() == [[10, 12]]
    assert metrics.pointing_game(maps, boxes=box, size=(16, 16), tolerance=4.9).hits.tolist() \
        == [0.0]


def test_boxes_masks_and_unions() -> None:
    masks = metrics.boxes_to_masks([[(0, 0, 2, 2), (3, 3, 4, 4)], (1.4, 0, 2.6, 1)], (4, 4), 2)
    expected = np.zeros((2, 4, 4), dtype=bool)
    expected[0, :2, :2] = True
    expected[0, 3, 3] = True
    expected[1, 0, 1:2] = True                  # only the centre 1.5 lies in [1.4, 2.6]
    expected[1, 0, 2] = True                    # centre 2.5 too
    np.testing.assert_array_equal(masks.numpy(), expected)
    maps = torch.rand(2, 4, 4)
    by_box = metrics.pointing_game(maps, boxes=[[(0, 0, 2, 2), (3, 3, 4, 4)], (1.4, 0, 2.6, 1)],
                                   size=(4, 4), tolerance=0)
    by_mask = metrics.pointing_game(maps, masks=masks, tolerance=0)
    assert torch.equal(by_box.hits, by_mask.hits)


def test_energy_of_a_signed_map_counts_its_positive_part() -> None:
    maps = torch.tensor([[[2.0, -5.0], [1.0, -1.0]]])
    mask = torch.tensor([[True, True], [False, False]])
    energy = metrics.energy_pointing_game(maps, masks=mask, polarity="signed")
    torch.testing.assert_close(energy, torch.tensor([2.0 / 3.0]))


def test_undefined_cases_are_nan_not_zero() -> None:
    maps = torch.stack([torch.rand(8, 8), -torch.rand(8, 8)])
    empty = torch.zeros(2, 8, 8, dtype=torch.bool)
    with pytest.warns(metrics.MetricWarning, match=r"the maps of images \[1\] are constant"):
        assert torch.isnan(metrics.pointing_game(maps, masks=empty).hits).all()
    mask = torch.ones(2, 8, 8, dtype=torch.bool)
    energy = metrics.energy_pointing_game(maps, masks=mask)
    assert float(energy[0]) == pytest.approx(1.0)
    assert torch.isnan(energy[1])              # a map with no positive energy


def test_box_of_the_photo_maps_to_the_model_input() -> None:
    # a 512×384 photo, resized so that its short side is 256 (×2/3), centre-cropped to 224
    pre = xw.Preprocessing(resize=256, crop=(224, 224))
    left = (512 * 2 / 3 - 224) / 2
    box = metrics.box_to_input((120, 30, 300, 330), (512, 384), pre)
    expected = (120 * 2 / 3 - left, 30 * 2 / 3 - 16, 300 * 2 / 3 - left, 330 * 2 / 3 - 16)
    assert box == pytest.approx(expected)


def test_bad_regions_say_what_is_wrong() -> None:
    maps = torch.rand(2, 4, 4)
    with pytest.raises(MetricError, match="either as boxes= or as masks="):
        metrics.pointing_game(maps)
    with pytest.raises(MetricError, match="give size="):
        metrics.pointing_game(maps, boxes=(0, 0, 1, 1))
    with pytest.raises(MetricError, match="one per image"):
        metrics.pointing_game(maps, boxes=[(0, 0, 1, 1)] * 3, size=(4, 4))
    with pytest.raises(MetricError, match="expected"):
        metrics.pointing_game(maps, masks=np.ones((3, 4, 4), dtype=bool))
    with pytest.raises(MetricError, match="does not fit"):
        metrics.pointing_game(maps, masks=np.ones((2, 3, 3), dtype=bool))
    with pytest.raises(xw.ParameterError, match="tolerance"):
        metrics.pointing_game(maps, masks=np.ones((4, 4), dtype=bool), tolerance=-1)


def test_a_mask_of_another_size_than_the_input_is_refused() -> None:
    # issue 10: a 7×7 mask once redefined the input size of a 24×24 explanation (a sure hit)
    model = bundle(ClassMapNet(), size=24, classes=3)
    e = xw.explain(model, scene(), "cam", target=0)
    small = np.zeros((7, 7), dtype=bool)
    small[0, 0] = True
    for game in (metrics.pointing_game, metrics.energy_pointing_game):
        with pytest.raises(MetricError, match=r"masks are 7×7 but the model input is 24×24"):
            game(e, masks=small)
        with pytest.raises(MetricError, match=r"masks are 7×7 but the model input is 24×24"):
            game(e.map, masks=small, size=(24, 24))


def test_a_box_that_is_not_finite_is_refused() -> None:
    maps = torch.rand(1, 8, 8)
    for box in ((0, 0, math.nan, 4), (0, -math.inf, 4, 4)):
        with pytest.raises(MetricError, match="not a finite number"):
            metrics.pointing_game(maps, boxes=box, size=(8, 8))
        with pytest.raises(MetricError, match="not a finite number"):
            metrics.energy_pointing_game(maps, boxes=[[box, (0, 0, 2, 2)]], size=(8, 8))


def test_a_constant_map_warns_that_its_maximum_is_arbitrary() -> None:
    with pytest.warns(metrics.MetricWarning, match="constant .value 0.: the maximum point is "
                                                   "the first pixel"):
        result = metrics.pointing_game(torch.zeros(1, 4, 4), masks=np.ones((4, 4), dtype=bool))
    assert result.points.tolist() == [[0, 0]]
