"""Evaluation of insecurities against hand-made annotations: precision, recall and IoU on
crafted masks, in the geometry the model saw, including the cases the original got wrong
(anisotropic point scaling, ``np.resize`` of masks, pairs without a common part, a 0
percentile threshold)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_models import PlainNet, bundle

import xai_widgets as xw
from xai_widgets import deliberative as dl
from xai_widgets.deliberative.result import Difficulty, InsecurityResult, Pair


def crafted(maps: dict[tuple[int, int], torch.Tensor]) -> InsecurityResult:
    """A result on an 8×8 input whose pairs have the given 8×8 insecurity maps."""
    b = bundle(PlainNet(4), 8, classes=4)
    pairs = [Pair(a, c, (f"class{a}", f"class{c}"), (a, c), 1.0 - 0.1 * n, 1.0, 1, m)
             for n, ((a, c), m) in enumerate(maps.items())]
    return InsecurityResult(
        b, "crafted", "features.3", "gradient", True, 3,
        [(i, f"class{i}", 0.25) for i in range(4)], torch.zeros(4, 8, 8),
        Difficulty("cs", "cs", 0.5, torch.ones(8, 8), "gradient"), pairs,
        np.zeros((8, 8, 3), dtype=np.uint8), (8, 8), torch.zeros(4))


def corner_map() -> torch.Tensor:
    """Largest in the top-left 2×2 block, then the rest of the first two rows, then the rest."""
    m = torch.zeros(8, 8)
    m[:2, :] = 1.0
    m[:2, :2] = 2.0
    m[2:] = torch.linspace(0.0, 0.5, 48).view(6, 8)
    return m


PARTS = {"head": (0.5, 0.5), "wing": (1.5, 0.5), "tail": (6.5, 6.5), "leg": None}


def test_part_precision_and_recall_on_a_crafted_map() -> None:
    r = crafted({(0, 1): corner_map()})
    scores = dl.part_scores(r, PARTS, {(1, 0): ["head", "tail"]}, areas=(4 / 64, 16 / 64, 1.0))
    # area 4/64: the 2×2 corner holds head and wing; head is common, tail is not inside
    # area 16/64: the first two rows: the same parts; area 1: every visible part
    assert scores.pairs == [(0, 1)]
    np.testing.assert_allclose(scores.recall[0], [0.5, 0.5, 1.0])
    np.testing.assert_allclose(scores.precision[0], [0.5, 0.5, 2 / 3])


def test_no_visible_part_inside_gives_nan_precision_not_zero() -> None:
    m = torch.zeros(8, 8)
    m[4, 4] = 1.0
    r = crafted({(0, 1): m})
    scores = dl.part_scores(r, PARTS, {(0, 1): ["head"]}, areas=(1 / 64,))
    assert scores.recall[0, 0] == 0.0
    assert math.isnan(scores.precision[0, 0])


def test_pairs_without_common_or_visible_parts_are_excluded_not_counted_as_zero() -> None:
    r = crafted({(0, 1): corner_map(), (0, 2): corner_map(), (1, 2): corner_map()})
    common = {(0, 1): ["head"], (1, 2): ["leg"]}  # (0, 2): none in the table; leg: invisible
    scores = dl.part_scores(r, PARTS, common, areas=(4 / 64,))
    assert scores.pairs == [(0, 1)]
    assert scores.no_common == [(0, 2)] and scores.invisible == [(1, 2)]
    _precision, recall = scores.mean()
    assert recall.tolist() == [1.0]
    # the original kept the pairs without a common part in the denominator: (1 + 0) / 2
    original = (1.0 + 0.0) / 2
    assert recall[0] != original


def test_points_follow_the_resize_and_centre_crop_the_model_saw() -> None:
    preprocessing = xw.Preprocessing(resize=8, crop=(8, 8))
    # a 400×200 photo: resized to 16×8, cropped to columns 4..12 = photo columns 100..300
    points = dl.points_to_input({"left edge": (100, 0), "centre": (200, 100),
                                 "cut off": (50, 100), "hidden": None}, (400, 200),
                                preprocessing)
    assert points["left edge"] == pytest.approx((0.0, 0.0))
    assert points["centre"] == pytest.approx((4.0, 4.0))
    assert points["cut off"] is None and points["hidden"] is None
    # the original scaled x by 8/400: the left edge would land at x = 2, inside the image
    assert 100 * 8 / 400 == 2.0
    r = crafted({(0, 1): corner_map()})
    seen = dl.part_scores(r, points, {(0, 1): ["left edge", "cut off"]}, areas=(4 / 64,))
    assert seen.recall[0, 0] == 1.0  # "cut off" is invisible to the model, not a miss
    wrong = {"left edge": (100 * 8 / 400, 0.0), "cut off": (50 * 8 / 400, 100 * 8 / 200)}
    misplaced = dl.part_scores(r, wrong, {(0, 1): ["left edge", "cut off"]}, areas=(4 / 64,))
    assert misplaced.recall[0, 0] == 0.0


def test_masks_are_resampled_in_the_crop_not_reshaped() -> None:
    preprocessing = xw.Preprocessing(resize=8, crop=(8, 8))
    labels = np.zeros((200, 400), dtype=np.int64)
    labels[:, 100:150] = 3  # photo columns 100..150 -> input columns 0..2
    labels[100:, 250:300] = 5  # lower half, photo columns 250..300 -> input columns 6..8
    mapped = dl.mask_to_input(labels, preprocessing)
    expected = np.zeros((8, 8), dtype=np.int64)
    expected[:, 0:2] = 3
    expected[4:, 6:8] = 5
    np.testing.assert_array_equal(mapped.numpy(), expected)
    assert not np.array_equal(np.resize(labels, (8, 8)), expected)  # the original's bug
    boolean = dl.mask_to_input(labels == 3, preprocessing)
    assert boolean.dtype == torch.bool and boolean.sum() == 16


def test_object_iou_on_a_crafted_map() -> None:
    r = crafted({(0, 1): corner_map(), (0, 2): corner_map()})
    objects = torch.zeros(8, 8, dtype=torch.int64)
    objects[:2, :2] = 3
    objects[7, 7] = 4
    scores = dl.object_scores(r, objects, {(0, 1): [3], (0, 2): [9]}, areas=(4 / 64, 8 / 64))
    assert scores.pairs == [(0, 1)] and scores.absent == [(0, 2)]
    np.testing.assert_allclose(scores.iou[0], [1.0, 0.5])
    with pytest.raises(xw.ParameterError, match="mask_to_input"):
        dl.object_scores(r, torch.zeros(4, 4, dtype=torch.int64), {(0, 1): [3]})


def test_common_parts_from_a_divergence_table() -> None:
    divergence = np.ones((3, 3, 2))
    divergence[np.arange(3), np.arange(3)] = 0.0
    divergence[0, 1, 1] = divergence[1, 0, 1] = 0.0  # classes 0 and 1 share part "tail"
    common = dl.common_parts(divergence, ["head", "tail"], quantile=0.4)
    assert common == {(0, 1): ("tail",)}


def test_common_objects_never_from_a_zero_threshold() -> None:
    similarity = np.zeros((10, 10, 30))
    similarity[0, 1, 2] = similarity[1, 0, 2] = 0.8
    # 99 % of the entries are 0: the 99th percentile is 0, and the original called every
    # object of every pair common
    assert np.percentile(similarity, 99) == 0.0
    assert dl.common_objects(similarity, 99) == {(0, 1): (2,)}
    frequency = np.array([[0.9, 0.2, 0.5], [0.8, 0.9, 0.0], [0.0, 0.4, 0.6]])
    table = dl.object_similarity(frequency)
    assert table[0, 1].tolist() == [pytest.approx(0.85), 0.0, 0.0]  # 0.2 < 0.3 counts as 0


def test_part_divergence_is_twice_the_jensen_shannon_divergence() -> None:
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(0)
    attributes = rng.uniform(0, 5, size=(3, 6))
    table, names = dl.part_divergence(attributes, {"beak": [[0, 1, 2]], "wing": [[3, 4],
                                                                                 [4, 5]]})
    assert names == ["beak", "wing"]

    def soft(v: np.ndarray) -> np.ndarray:
        e = np.exp(v - v.max())
        return e / e.sum()

    expected = 2 * jensenshannon(soft(attributes[0, :3]), soft(attributes[2, :3])) ** 2
    assert table[0, 2, 0] == pytest.approx(expected)
    wing = np.mean([2 * jensenshannon(soft(attributes[1, c]), soft(attributes[2, c])) ** 2
                    for c in ([3, 4], [4, 5])])
    assert table[1, 2, 1] == pytest.approx(wing)
    assert np.allclose(np.diagonal(table, axis1=0, axis2=1), 0.0)


def test_average_over_images_ignores_undefined_values() -> None:
    a = crafted({(0, 1): corner_map()})
    first = dl.part_scores(a, PARTS, {(0, 1): ["head"]}, areas=(4 / 64,))
    second = dl.part_scores(a, PARTS, {(0, 1): ["tail"]}, areas=(4 / 64,))
    precision, recall = dl.average([first, second])
    assert recall.tolist() == [0.5]
    assert precision.tolist() == [0.25]  # 1/2 (head of head, wing) and 0/2
