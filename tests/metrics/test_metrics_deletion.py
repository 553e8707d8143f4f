"""Deletion and insertion: hand-computed curves and areas, ordering of good and bad maps,
substrates, batching, progress, bad inputs, and the model left unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metric_models import RegionSum, top_left
from scipy import ndimage
from test_contract import Failing, assert_same, snapshot, user_model
from tiny_models import PlainNet, bundle

import xai_widgets as xw
from xai_widgets import metrics
from xai_widgets.metrics import Cancelled, MetricError, MetricWarning, forward
from xai_widgets.metrics.deletion import rise_kernel

ONES = torch.ones(1, 3, 4, 4)


def region_bundle(bias: float = 0.0):
    return bundle(RegionSum(top_left(4, 2), bias=bias), size=4)


def curves(maps, **options):
    options = {"score": "logit", "pixels_per_step": 1, "insertion_substrate": "zeros",
               **options}
    return metrics.deletion_insertion(region_bundle(), ONES, maps, 0, **options)


def test_perfect_map_by_hand() -> None:
    # 4 of 16 pixels carry the logit (1 each); deleting them first: 4, 3, 2, 1, 0, 0, ...
    result = curves(top_left(4, 2).float())
    deletion = torch.tensor([4.0, 3, 2, 1] + [0] * 13)
    insertion = torch.tensor([0.0, 1, 2, 3] + [4] * 13)
    torch.testing.assert_close(result.deletion.fractions, torch.arange(17) / 16)
    torch.testing.assert_close(result.deletion.scores[0], deletion)
    torch.testing.assert_close(result.insertion.scores[0], insertion)
    # trapezoids: (3.5 + 2.5 + 1.5 + 0.5) / 16 and (0.5 + 1.5 + 2.5 + 3.5 + 12·4) / 16
    torch.testing.assert_close(result.deletion.auc, torch.tensor([0.5]))
    torch.testing.assert_close(result.insertion.auc, torch.tensor([3.5]))


def test_inverted_map_by_hand() -> None:
    result = curves(-top_left(4, 2).float())
    torch.testing.assert_close(result.deletion.scores[0], torch.tensor([4.0] * 13 + [3, 2, 1, 0]))
    torch.testing.assert_close(result.deletion.auc, torch.tensor([3.5]))
    torch.testing.assert_close(result.insertion.auc, torch.tensor([0.5]))


def test_step_that_does_not_divide_the_pixels() -> None:
    # 3 pixels per step: counts 0, 3, 6, 9, 12, 15, 16; the last interval is 1/16 wide
    result = curves(top_left(4, 2).float(), pixels_per_step=3, kinds=("deletion",))
    torch.testing.assert_close(result.deletion.fractions,
                               torch.tensor([0, 3, 6, 9, 12, 15, 16]) / 16)
    torch.testing.assert_close(result.deletion.scores[0], torch.tensor([4.0, 1, 0, 0, 0, 0, 0]))
    torch.testing.assert_close(result.deletion.auc, torch.tensor([(2.5 + 0.5) * 3 / 16]))
    assert "insertion" not in result.curves


def test_rise_formula_when_the_step_divides() -> None:
    scores = torch.rand(1, 17)
    curve = metrics.Curve("deletion", torch.arange(17) / 16, scores, "zeros", "logit")
    rise = (scores.sum() - scores[0, 0] / 2 - scores[0, -1] / 2) / 16
    torch.testing.assert_close(curve.auc, rise[None])


def test_probability_is_the_softmax_of_the_logits() -> None:
    logits = curves(top_left(4, 2).float())
    probabilities = curves(top_left(4, 2).float(), score="probability")
    for kind in ("deletion", "insertion"):
        torch.testing.assert_close(probabilities[kind].scores,
                                   torch.sigmoid(logits[kind].scores))  # logits (s, 0)


def test_perfect_beats_random_beats_inverted() -> None:
    generator = torch.Generator().manual_seed(1)
    weight = torch.rand(16, 16, generator=generator)
    x = torch.rand(1, 3, 16, 16, generator=generator) + 0.5
    model = bundle(RegionSum(torch.ones(16, 16, dtype=torch.bool), weight), size=16)
    perfect = (weight * x[0, 0])[None]
    random = torch.rand(1, 16, 16, generator=generator)
    areas = {name: metrics.deletion_insertion(model, x, m, 0, score="logit",
                                              insertion_substrate="zeros").areas()
             for name, m in (("perfect", perfect), ("random", random), ("inverted", -perfect))}
    assert areas["perfect"]["deletion"] < areas["random"]["deletion"] < \
        areas["inverted"]["deletion"]
    assert areas["perfect"]["insertion"] > areas["random"]["insertion"] > \
        areas["inverted"]["insertion"]


def test_batched_in_any_chunks_and_counted() -> None:
    model = bundle(PlainNet().eval(), size=16)
    x = torch.randn(3, 3, 16, 16)
    maps = torch.randn(3, 4, 4)
    reference = metrics.deletion_insertion(model, x, maps, [0, 1, 2], chunk_size=1000)
    for chunk in (1, 7):
        again = metrics.deletion_insertion(model, x, maps, [0, 1, 2], chunk_size=chunk)
        for kind in ("deletion", "insertion"):
            torch.testing.assert_close(again[kind].scores, reference[kind].scores)
    alone = metrics.deletion_insertion(model, x[1:2], maps[1:2], 1)
    torch.testing.assert_close(alone.deletion.scores, reference.deletion.scores[1:2])
    # 16 steps each, the images themselves once: 3 · (1 + 16 + 16)
    assert reference.forwards == 3 * 33
    shared = metrics.deletion_insertion(model, x, maps, [0, 1, 2], insertion_substrate="zeros")
    assert shared.forwards == 3 * 32  # deletion's last input is insertion's first
    torch.testing.assert_close(shared.deletion.scores[:, -1], shared.insertion.scores[:, 0])


def test_default_chunk_size_fits_the_device() -> None:
    assert forward.default_chunk_size(torch.device("cpu")) == 2
    assert forward.default_chunk_size(torch.device("cuda")) == 32
    seen: list[float] = []
    metrics.deletion_insertion(bundle(PlainNet().eval(), size=16), torch.randn(1, 3, 16, 16),
                               torch.randn(1, 4, 4), 0, progress=lambda f, _: seen.append(f))
    assert len(seen) == 16  # 32 inputs in chunks of 2


def test_progress_reports_and_cancels() -> None:
    model = user_model("inplace_resnet")
    before = snapshot(model)
    seen: list[float] = []
    metrics.deletion_insertion(bundle(model), torch.randn(1, 3, 16, 16), torch.randn(1, 4, 4),
                               chunk_size=5, progress=lambda f, _: seen.append(f))
    assert seen == sorted(seen)
    assert seen[-1] == 1.0
    assert len(seen) == 7  # 32 inputs in chunks of 5

    def cancel(fraction: float, _preview: object) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        metrics.deletion_insertion(bundle(model), torch.randn(1, 3, 16, 16),
                                   torch.randn(1, 4, 4), chunk_size=5, progress=cancel)
    assert_same(before, snapshot(model))


def test_blur_is_gaussian_with_mirrored_borders() -> None:
    x = torch.rand(2, 3, 20, 24)
    ours = metrics.gaussian_blur(x, 11, 5.0)
    offsets = np.arange(11) - 5
    kernel = np.exp(-offsets**2 / 50.0)
    kernel /= kernel.sum()
    expected = ndimage.correlate1d(x.double().numpy(), kernel, axis=2, mode="mirror")
    expected = ndimage.correlate1d(expected, kernel, axis=3, mode="mirror")
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-6)
    # a flat image stays flat: no border fading towards zero (RISE's zero padding does that)
    torch.testing.assert_close(metrics.gaussian_blur(torch.full((1, 3, 8, 8), 0.7)),
                               torch.full((1, 3, 8, 8), 0.7))


def rise_kernel_1d(size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """RISE's kernel along one axis by hand: a delta at the centre of ``size`` samples,
    correlated with the Gaussian of ``sigma`` truncated at 4σ (±20 taps, normalised), the
    samples outside continuing by half-sample reflection (``d c b a | a b c d | d c``)."""
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()

    def inside(p: int) -> int:
        while not 0 <= p < size:
            p = -p - 1 if p < 0 else 2 * size - p - 1
        return p

    return np.array([sum(w for j, w in zip(offsets, weights, strict=True)
                         if inside(i + j) == size // 2) for i in range(size)])


def test_rise_blur_is_the_rise_codes_kernel_with_zero_padding() -> None:
    k = rise_kernel_1d()
    torch.testing.assert_close(rise_kernel(),
                               torch.from_numpy(np.outer(k, k)).float())
    assert k.max() / k.min() == pytest.approx(1.0685, abs=1e-4)   # nearly a box filter
    flat = metrics.rise_blur(torch.ones(1, 3, 16, 16))
    # inside: the kernel sums to one; at a corner only its quarter k[5:] × k[5:] sees the image
    torch.testing.assert_close(flat[:, :, 5:11, 5:11], torch.ones(1, 3, 6, 6))
    torch.testing.assert_close(flat[0, :, 0, 0], torch.full((3,), float(k[5:].sum() ** 2)))
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    expected = ndimage.correlate(x[0, 1].double().numpy(), np.outer(k, k), mode="constant")
    np.testing.assert_allclose(metrics.rise_blur(x)[0, 1].numpy(), expected, atol=1e-6)
    # the default blur is another kernel, not only at the border
    inner = (slice(None), slice(None), slice(5, 19), slice(5, 19))
    assert (metrics.rise_blur(x)[inner] - metrics.gaussian_blur(x)[inner]).abs().max() > 0.01
    result = curves(top_left(4, 2).float(), insertion_substrate="rise_blur")
    assert result.insertion.substrate == "rise_blur"


def test_mean_and_image_substrates() -> None:
    x = torch.rand(1, 3, 4, 4) + 1.0
    mean = curves(-top_left(4, 2).float(), kinds=("deletion",), deletion_substrate="mean")
    assert mean.deletion.substrate == "mean"
    model = region_bundle()
    with pytest.warns(MetricWarning, match="the map is constant .value 1.: the pixels are "
                                           "deleted and inserted in raster order"):
        result = metrics.deletion_insertion(model, x, torch.ones(1, 4, 4), 0, score="logit",
                                            pixels_per_step=16, deletion_substrate="mean",
                                            insertion_substrate=torch.full((1, 3, 4, 4), 2.0))
    channel_mean = x[0, 0].mean()
    torch.testing.assert_close(result.deletion.scores[0], torch.stack([x[0, 0, :2, :2].sum(),
                                                                        4 * channel_mean]))
    torch.testing.assert_close(result.insertion.scores[0], torch.stack([torch.tensor(8.0),
                                                                         x[0, 0, :2, :2].sum()]))
    assert result.insertion.substrate == "image"
    with pytest.raises(MetricError, match="substrate image"), pytest.warns(MetricWarning):
        metrics.deletion_insertion(model, x, torch.ones(1, 4, 4), deletion_substrate=torch.zeros(
            1, 3, 8, 8))


def test_from_an_explanation_with_per_channel_maps() -> None:
    model = bundle(PlainNet().eval(), size=16, classes=5)
    x = torch.randn(2, 3, 16, 16)
    e = xw.explain(model, x, "saliency", target=[3, 1])
    result = metrics.deletion_insertion(e, x)
    assert result.targets == (3, 1)
    assert result.target_names == ("class3", "class1")
    assert result.deletion.scores.shape == (2, 17)
    # the map ranks pixels as the method displays it: max |g| over channels
    by_hand = metrics.deletion_insertion(model, x, e.map.abs().amax(dim=1), [3, 1])
    torch.testing.assert_close(result.deletion.scores, by_hand.deletion.scores)
    assert metrics.deletion(e, x).kind == "deletion"
    assert metrics.insertion(e, x).kind == "insertion"
    figure = result.figure(1)
    assert "class1" in figure.axes[0].get_ylabel()


def test_bad_inputs_say_what_is_wrong() -> None:
    model = region_bundle()
    with pytest.raises(MetricError, match="does not fit a 4×4 input"):
        metrics.deletion_insertion(model, ONES, torch.rand(1, 2, 4))
    with pytest.raises(MetricError, match="does not fit"):
        metrics.deletion_insertion(model, ONES, torch.rand(1, 8, 8))
    with pytest.raises(MetricError, match="one map per image"):
        metrics.deletion_insertion(model, ONES, torch.rand(2, 4, 4))
    with pytest.raises(MetricError, match="NaN"):
        metrics.deletion_insertion(model, ONES, torch.full((1, 4, 4), float("nan")))
    with pytest.raises(xw.ParameterError, match="did you mean 'blur'"):
        metrics.deletion_insertion(model, ONES, torch.rand(1, 4, 4), insertion_substrate="blurr")
    with pytest.raises(xw.ParameterError, match="pixels_per_step"):
        metrics.deletion_insertion(model, ONES, torch.rand(1, 4, 4), pixels_per_step=0)
    with pytest.raises(xw.ParameterError, match="chunk_size"):
        metrics.deletion_insertion(model, ONES, torch.rand(1, 4, 4), chunk_size=0)
    with pytest.raises(xw.ParameterError, match="score"):
        metrics.deletion_insertion(model, ONES, torch.rand(1, 4, 4), score="prob")
    with pytest.raises(xw.TargetError):
        metrics.deletion_insertion(model, ONES, torch.rand(1, 4, 4), target=7)
    e = xw.explain(bundle(PlainNet()), torch.randn(1, 3, 16, 16), "grad_cam")
    with pytest.raises(MetricError, match="pass the same images"):
        metrics.deletion_insertion(e)
    with pytest.raises(MetricError, match="give the images and their raw maps"):
        metrics.deletion_insertion(model, ONES)


def test_a_small_map_is_upsampled_and_any_model_mode_is_restored() -> None:
    model = user_model("relu6")
    before = snapshot(model)
    x = torch.randn(2, 3, 16, 16)
    x_before = x.clone()
    result = metrics.deletion_insertion(bundle(model), x, torch.randn(2, 3, 3), [0, 4],
                                        pixels_per_step=40)
    assert result.deletion.scores.shape == (2, 8)  # ceil(256 / 40) = 7 steps
    assert_same(before, snapshot(model))
    assert torch.equal(x, x_before)


@pytest.mark.parametrize("metric", [metrics.deletion_insertion, metrics.tradeoff])
def test_unchanged_when_the_model_raises(metric) -> None:
    model = Failing(user_model("inplace_resnet"))   # raises from its second forward on
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="user model failed"):
        metric(bundle(model), torch.randn(1, 3, 16, 16), torch.randn(1, 4, 4))
    assert_same(before, snapshot(model))
