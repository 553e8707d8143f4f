"""Integrated gradients: the 10,000-step NumPy reference, completeness, baselines, quadrature
rules, batching and chunking, progress and cancellation, errors at the boundary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import load_reference, reference_nets
from tiny_models import ARCHITECTURES, LinearNet, bundle
from torch import nn

import xai_widgets as xw
from xai_widgets.blur import gaussian_blur
from xai_widgets.kernels._iterative import quadrature
from xai_widgets.kernels.spec import Cancelled

REFERENCE = load_reference("integrated_gradients")


class SmoothNet(nn.Module):
    """Softplus and tanh only: a smooth function of the input."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Softplus(),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Tanh())
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def tiny() -> tuple[nn.Module, torch.Tensor, list[int]]:
    net = reference_nets.tiny_net(REFERENCE)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    return net, x, REFERENCE["targets"].tolist()


@pytest.mark.parametrize("baseline", ["black", "user"])
def test_matches_10000_step_reference(baseline: str) -> None:
    net, x, targets = tiny()
    given = "black" if baseline == "black" else torch.tensor(REFERENCE["user_baseline"])
    e = xw.explain(bundle(net, size=8), x, "integrated_gradients", target=targets,
                   n_steps=10_000, baseline=given, chunk_size=5_000)
    expected = torch.tensor(REFERENCE[f"ig:{baseline}"], dtype=torch.float32)
    # float32 vs float64: a ReLU may switch at a different one of the 10,000 steps
    torch.testing.assert_close(e.map, expected, rtol=1e-3, atol=1e-5 * float(expected.abs().max()))
    delta = torch.tensor(REFERENCE[f"delta:{baseline}"], dtype=torch.float32)
    torch.testing.assert_close(e.extras["delta"], delta, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", ["riemann_middle", "riemann_trapezoid", "gausslegendre"])
def test_other_rules_converge_to_the_reference(rule: str) -> None:
    net, x, targets = tiny()
    e = xw.explain(bundle(net, size=8), x, "integrated_gradients", target=targets,
                   n_steps=256, quadrature=rule, chunk_size=512)
    expected = torch.tensor(REFERENCE["ig:black"], dtype=torch.float32)
    error = (e.map - expected).norm() / expected.norm()
    assert error < 0.01


@pytest.mark.parametrize(("rule", "baseline"), [
    ("riemann_middle", "black"), ("riemann_trapezoid", "black"), ("gausslegendre", "black"),
    ("gausslegendre", "blurred"), ("gausslegendre", "uniform")])
def test_completeness_within_one_percent_at_64_steps(rule: str, baseline: str) -> None:
    torch.manual_seed(1)
    net = SmoothNet().eval()
    x = 2 * torch.randn(3, 3, 8, 8)
    b = bundle(net, size=8)
    e = xw.explain(b, x, "integrated_gradients", target=[0, 1, 2], n_steps=64,
                   quadrature=rule, baseline=baseline, blur_sigma=2.0, chunk_size=192)
    x0 = e.extras["baseline"]
    with torch.no_grad():
        delta = net(x)[torch.arange(3), [0, 1, 2]] - net(x0)[torch.arange(3), [0, 1, 2]]
    torch.testing.assert_close(e.extras["delta"], delta, rtol=1e-5, atol=1e-6)
    total = e.map.flatten(1).sum(dim=1)
    assert ((total - delta).abs() <= 0.01 * delta.abs()).all(), (total, delta)
    torch.testing.assert_close(e.extras["completeness_error"], total - delta, rtol=1e-3,
                               atol=1e-6)


def test_linear_model_is_exact_with_one_step() -> None:
    net = LinearNet(size=8).eval()
    x, x0 = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    e = xw.explain(bundle(net, size=8), x, "integrated_gradients", target=[1, 4], n_steps=1,
                   baseline=x0)
    # y_c = Σ_k W[c, k, ·] Σ_i M[k, i] x_i + b: the gradient is constant
    weight = net.fc.weight.detach().view(5, 3, 8, 8)
    mix = net.mix.weight.detach()[:, :, 0, 0]
    gradient = torch.einsum("ckhw,ki->cihw", weight, mix)[[1, 4]]
    torch.testing.assert_close(e.map, (x - x0) * gradient, rtol=1e-5, atol=1e-6)
    assert e.extras["completeness_error"].abs().max() < 1e-4


def test_baselines() -> None:
    preprocessing = xw.Preprocessing(resize=None, crop=(8, 8), mean=(0.5, 0.4, 0.3),
                                     std=(0.2, 0.25, 0.5))
    net, x, targets = tiny()
    b = xw.ModelBundle(net, preprocessing)

    def baseline(**params: object) -> torch.Tensor:
        e = xw.explain(b, x, "integrated_gradients", target=targets, n_steps=2, **params)
        return e.extras["baseline"]

    black = baseline(baseline="black")
    torch.testing.assert_close(black[0, :, 0, 0], torch.tensor([-2.5, -1.6, -0.6]))
    assert torch.equal(baseline(baseline="mean"), torch.zeros_like(x))
    uniform = baseline(baseline="uniform", seed=3)
    rgb = uniform * torch.tensor([0.2, 0.25, 0.5]).view(3, 1, 1) + \
        torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)
    assert rgb.min() >= 0 and rgb.max() <= 1
    assert torch.equal(uniform[0], uniform[1])  # one noise photo for the batch
    assert torch.equal(uniform, baseline(baseline="uniform", seed=3))
    assert not torch.equal(uniform, baseline(baseline="uniform", seed=4))
    blurred = baseline(baseline="blurred", blur_sigma=1.0)
    torch.testing.assert_close(blurred, gaussian_blur(x, 1.0))
    assert blurred.std() < x.std()
    constant = torch.full((1, 3, 8, 8), 0.7)
    torch.testing.assert_close(gaussian_blur(constant, 3.0), constant)
    user = torch.randn(3, 8, 8)
    assert torch.equal(baseline(baseline=user), user.expand(2, 3, 8, 8))


def test_quadrature_rules() -> None:
    for rule in ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid",
                 "gausslegendre"):
        points, weights = quadrature(rule, 7, "test")
        assert np.isclose(weights.sum(), 1.0)
        assert points.min() >= 0 and points.max() <= 1
    points, _ = quadrature("riemann_right", 4, "test")
    np.testing.assert_allclose(points, [0.25, 0.5, 0.75, 1.0])
    points, weights = quadrature("riemann_trapezoid", 3, "test")
    np.testing.assert_allclose(points, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(weights, [0.25, 0.5, 0.25])
    points, weights = quadrature("gausslegendre", 5, "test")
    assert np.isclose((weights * points ** 9).sum(), 1 / 10)  # exact up to degree 9


def test_batch_and_chunks_do_not_change_the_result() -> None:
    net = ARCHITECTURES["inplace_resnet"]().eval()
    b = bundle(net)
    x = torch.randn(3, 3, 16, 16)
    together = xw.explain(b, x, "integrated_gradients", target=[0, 3, 4], n_steps=6,
                          chunk_size=5)
    for i, t in enumerate([0, 3, 4]):
        alone = xw.explain(b, x[i:i + 1], "integrated_gradients", target=t, n_steps=6,
                           chunk_size=1)
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-4, atol=1e-7)


def test_progress_and_cancellation() -> None:
    net = ARCHITECTURES["plain"]().eval()
    b = bundle(net)
    x = torch.randn(2, 3, 16, 16)
    seen: list[float] = []

    def progress(fraction: float, preview: torch.Tensor | None) -> None:
        seen.append(fraction)
        assert preview is not None
        assert preview.shape == (2, 3, 16, 16)

    xw.explain(b, x, "integrated_gradients", n_steps=5, chunk_size=3, progress=progress)
    assert seen == pytest.approx([0.3, 0.6, 0.9, 1.0])

    def cancel(fraction: float, preview: torch.Tensor | None) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        xw.explain(b, x, "integrated_gradients", n_steps=5, chunk_size=3, progress=cancel)
    assert torch._C._len_torch_function_stack() == 0


def test_bad_parameters_raise_clear_errors() -> None:
    net, x, _targets = tiny()
    b = bundle(net, size=8)
    with pytest.raises(xw.ParameterError, match="'n_steps' must lie in"):
        xw.explain(b, x, "integrated_gradients", n_steps=0)
    with pytest.raises(xw.ParameterError, match="baseline has shape"):
        xw.explain(b, x, "integrated_gradients", baseline=torch.zeros(3, 4, 4))
    with pytest.raises(xw.ParameterError, match="'baseline' must be one of"):
        xw.explain(b, x, "integrated_gradients", baseline="white")
    with pytest.raises(xw.ParameterError, match="trapezoid rule needs n_steps >= 2"):
        xw.explain(b, x, "integrated_gradients", n_steps=1, quadrature="riemann_trapezoid")
    with pytest.raises(xw.ParameterError, match="did you mean 'n_steps'"):
        xw.explain(b, x, "integrated_gradients", steps=10)


@pytest.mark.parametrize("rule", ["riemann_left", "riemann_trapezoid"])
def test_baseline_score_comes_from_the_first_point(rule: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Rules with a point at the baseline need no extra forward for the completeness check."""
    from xai_widgets.kernels import integrated_gradients as ig

    net, x, targets = tiny()
    b = bundle(net, size=8)
    expected = xw.explain(b, x, "integrated_gradients", target=targets, n_steps=6,
                          quadrature=rule, chunk_size=5).extras["delta"]

    def refuse(*args: object) -> None:
        raise AssertionError("an extra forward of the baseline")

    monkeypatch.setattr(ig, "target_logits", refuse)
    e = xw.explain(b, x, "integrated_gradients", target=targets, n_steps=6, quadrature=rule,
                   chunk_size=5)
    torch.testing.assert_close(e.extras["delta"], expected)
    torch.testing.assert_close(e.extras["delta"], torch.tensor(REFERENCE["delta:black"]).float(),
                               rtol=1e-5, atol=1e-6)
