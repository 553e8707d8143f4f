"""The trade-off (amount of activation vs. re-identification), the similarity measures and
the cascading-randomisation sanity check."""

from __future__ import annotations

import pytest
import torch
from metric_models import RegionSum, TwoBranch, top_left
from scipy import stats
from test_contract import assert_same, snapshot, user_model
from tiny_models import bundle

import xai_widgets as xw
from xai_widgets import metrics
from xai_widgets.metrics import Cancelled, MetricError

# --------------------------------------------------------------------------- trade-off


def test_tradeoff_by_hand() -> None:
    # logits (Σ_region x_0, 0.5): on the ones image class 0 wins with 4 > 0.5
    model = bundle(RegionSum(top_left(4, 2), bias=0.5), size=4)
    ramp = torch.zeros(1, 4, 4)
    ramp[0, :2, :2] = torch.tensor([[1.0, 0.75], [0.5, 0.25]])   # only on the region
    result = metrics.tradeoff(model, torch.ones(1, 3, 4, 4), ramp, thresholds=(0, 0.5, 0.8))
    torch.testing.assert_close(result.thresholds, torch.tensor([0, 0.5, 0.8]))
    # ĥ_τ keeps the values ≥ τ: sums 2.5, 2.25, 1 over 16 pixels
    torch.testing.assert_close(result.amount, torch.tensor([[2.5, 2.25, 1.0]]) / 16)
    # the logit of class 0 on x ⊙ ĥ_τ is that same sum: re-identified while it beats 0.5
    assert result.top1.tolist() == [[True, True, True]]
    logits = torch.tensor([[2.5, 0.5], [2.25, 0.5], [1.0, 0.5]])
    torch.testing.assert_close(result.probability[0], logits.softmax(dim=1)[:, 0])
    weak = torch.zeros(1, 4, 4)
    weak[0, 3, 3] = 1.0                                            # keeps nothing of the region
    dropped = metrics.tradeoff(model, torch.ones(1, 3, 4, 4), weak)
    assert dropped.top1.tolist() == [[False]]
    assert dropped.top5.tolist() == [[True]]                       # 2nd of 2 classes
    assert dropped.rates()["amount"] == [pytest.approx(1 / 16)]


def test_tradeoff_from_an_explanation_leaves_the_model_unchanged() -> None:
    model = user_model("vgg")
    before = snapshot(model)
    x = torch.randn(2, 3, 16, 16)
    e = xw.explain(bundle(model), x, "grad_cam", target=[0, 3])
    result = metrics.tradeoff(e, x, thresholds=(0.0, 0.5, 0.9), chunk_size=4)
    assert result.targets == (0, 3)
    assert result.amount.shape == (2, 3)
    assert bool((result.amount[:, 1:] <= result.amount[:, :-1]).all())
    assert result.figure("grad_cam").axes
    assert_same(before, snapshot(model))
    with pytest.raises(xw.ParameterError, match="thresholds"):
        metrics.tradeoff(e, x, thresholds=(1.5,))


# --------------------------------------------------------------------------- similarity


def test_spearman_matches_scipy_with_ties() -> None:
    a = torch.tensor([[1.0, 2.0, 2.0, 5.0, 0.0], [3.0, 1.0, 4.0, 1.0, 5.0]])
    b = torch.tensor([[2.0, 1.0, 3.0, 3.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    ours = metrics.spearman(a, b)
    for i in range(2):
        assert float(ours[i]) == pytest.approx(stats.spearmanr(a[i], b[i]).statistic, abs=1e-6)
    assert torch.isnan(metrics.spearman(torch.ones(1, 5), a[:1]))[0]   # constant: undefined


def test_identical_maps_are_similar_and_opposite_ones_are_not() -> None:
    a = torch.rand(2, 16, 16)
    assert metrics.spearman(a, a).tolist() == pytest.approx([1.0, 1.0])
    assert metrics.spearman(a, -a).tolist() == pytest.approx([-1.0, -1.0])
    assert metrics.ssim(a, a).tolist() == pytest.approx([1.0, 1.0])
    assert metrics.hog(a, a).tolist() == pytest.approx([1.0, 1.0])
    assert float(metrics.ssim(a, torch.rand(2, 16, 16))[0]) < 0.5


# --------------------------------------------------------------------------- sanity check


@pytest.mark.parametrize("method", ["saliency", "grad_cam"])
def test_randomising_the_weights_destroys_a_gradient_map(method: str) -> None:
    model = user_model("plain")
    before = snapshot(model)
    x = torch.randn(2, 3, 16, 16)
    e = xw.explain(bundle(model), x, method, target=[1, 2])
    rng = torch.random.get_rng_state()
    seen: list[float] = []
    result = metrics.sanity_check(e, x, similarity=("spearman", "spearman_abs", "ssim", "hog"),
                                  progress=lambda f, m: seen.append(f))
    # PlainNet: features.0, features.2 (convs) and fc have parameters; cascade from the top
    assert result.stages == ["fc", "features.2", "features.0"]
    assert result.modules == [["fc"], ["features.2"], ["features.0"]]
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert len(result.maps) == 4
    assert torch.equal(result.maps[0], e.map)
    for name, values in result.similarity.items():
        assert values.shape == (3, 2)
        assert float(values[-1].abs().mean()) < 0.5, name   # from 1 (identical) to about 0
    assert result.targets == (1, 2)
    assert_same(before, snapshot(model))                    # the copy was randomised
    assert torch.equal(torch.random.get_rng_state(), rng)   # with a local generator


def test_randomising_a_branch_the_map_does_not_use_keeps_it() -> None:
    model = bundle(TwoBranch())
    x = torch.randn(1, 3, 16, 16)
    e = xw.explain(model, x, "saliency", target=0)
    result = metrics.sanity_check(e, x, stages=["b", "a"], similarity=("spearman", "ssim"))
    assert result.stages == ["b", "a"]
    assert result.similarity["spearman"][0].tolist() == pytest.approx([1.0])  # b: unchanged
    assert result.similarity["ssim"][0].tolist() == pytest.approx([1.0])
    assert float(result.similarity["spearman"][1, 0]) < 0.5                   # a: destroyed


def test_stages_by_count_and_by_name() -> None:
    model = bundle(user_model("inplace_resnet"))
    x = torch.randn(1, 3, 16, 16)
    grouped = metrics.sanity_check(model, x, method="grad_cam", stages=3,
                                   similarity=("spearman",))
    assert grouped.modules[0] == ["fc"]
    assert len(grouped.modules) == 3
    every = [m for group in grouped.modules for m in group]
    assert len(every) == len(set(every)) == 1 + 2 * 4 + 2   # fc, 2 blocks × 4, stem conv+bn
    named = metrics.sanity_check(model, x, method="grad_cam", stages=["fc", "layer2", "layer1"],
                                 similarity=("ssim",))
    assert named.modules[1] == ["layer2.bn2", "layer2.conv2", "layer2.bn1", "layer2.conv1"]
    assert named.figure().axes
    with pytest.raises(MetricError, match="did you mean 'layer2'"):
        metrics.sanity_check(model, x, method="grad_cam", stages=["layer22"])
    with pytest.raises(MetricError, match="name the method"):
        metrics.sanity_check(model, x)
    with pytest.raises(xw.ParameterError, match="similarity"):
        metrics.sanity_check(model, x, method="grad_cam", similarity=("pearson",))


def test_cancelled_sanity_check_leaves_the_model_unchanged() -> None:
    model = user_model("functional_relu")
    before = snapshot(model)

    def cancel(fraction: float, _preview: object) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        metrics.sanity_check(bundle(model), torch.randn(1, 3, 16, 16), method="saliency",
                             progress=cancel)
    assert_same(before, snapshot(model))
