"""Layer-wise inverse: the references (L-BFGS-B optima, unpooling and ratios by hand), box
constraints at every layer, exact reconstruction without sparsity, a known answer, chains
accepted and refused, batching, determinism, progress/cancel, trade-off, regression and the
DCT frequency bands."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import load_reference, reference_nets
from test_contract import assert_same, snapshot
from tiny_models import FunctionalNet, InplaceResNet, PlainNet, Relu6Net, VggNet, bundle
from torch import nn

import xai_widgets as xw
from xai_widgets.kernels import _layerwise
from xai_widgets.kernels._chain import capture
from xai_widgets.kernels.layerwise_inverse import (
    amount_of_activation,
    attribution,
    dct_matrix,
    frequency_bands,
    invert_regression,
    sparsity_sweep,
    zigzag,
)
from xai_widgets.kernels.spec import Cancelled

REFERENCE = load_reference("layerwise_inverse")
QUICK = {"max_iterations": 100, "tolerance": 1e-2}
FAST = {"max_iterations": 20}  # where only invariants that hold at every iteration matter


def reference_chain():
    net = reference_nets.tiny_net(REFERENCE)
    return capture(net, torch.tensor(REFERENCE["input"], dtype=torch.float32))


def tensor(name: str) -> torch.Tensor:
    return torch.tensor(REFERENCE[name], dtype=torch.float32)


class PoolNet(nn.Module):
    """conv-BN-ReLU, average pool, conv-ReLU, adaptive max pool, linear (a chain)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
            nn.AvgPool2d(2), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
            nn.AdaptiveMaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(), nn.Linear(24, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def pool_net() -> nn.Module:
    net = PoolNet()
    bn = net.features[1]
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        bn.running_mean.copy_(torch.rand(6, generator=generator) - 0.5)
        bn.running_var.copy_(torch.rand(6, generator=generator) + 0.5)
        bn.weight.copy_(torch.rand(6, generator=generator) + 0.5)
    return net.eval()


# ------------------------------------------------------------------------- references


def block_objective(unit, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The block objective of the paper, as the reference computes it."""
    norm = _layerwise._norm
    target = y * (norm(unit.output) / (norm(y) + 1e-10))[:, None, None, None]
    mu = _layerwise.sparsity_weight(y, unit.inputs)
    return norm(target - unit(x)) + 0.7 * norm(mu * x)


def solve_block(unit, y: torch.Tensor) -> torch.Tensor:
    x, _, converged = _layerwise.invert_block(unit, y, 0.7, _layerwise.Settings(),
                                              _layerwise.lipschitz(unit, unit.inputs, 0))
    assert converged.all()
    return block_objective(unit, y, x)


def test_convex_block_solve_reaches_the_global_optimum() -> None:
    # TinyNet's second convolution without its ReLU, on the recorded features.1
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.weight.copy_(tensor("features.2.weight"))
        conv.bias.copy_(tensor("features.2.bias"))
    unit = reference_chain().units[1]
    single = capture(nn.Sequential(conv), unit.inputs).units[0]
    assert not single.rectified
    ours = solve_block(single, tensor("block1:y"))
    best = tensor("convex:objective")
    assert (ours <= best * 1.001).all(), (ours, best)


@pytest.mark.parametrize("index", [0, 1])
def test_relu_block_solve_is_near_the_long_run_optimum(index: int) -> None:
    # non-convex (ReLU): a long L-BFGS-B run from the box centre may find another minimum
    ours = solve_block(reference_chain().units[index], tensor(f"block{index}:y"))
    best = tensor(f"block{index}:objective")
    assert (ours <= best * 1.01).all(), (ours, best)


def test_margin_solve_reaches_the_reference_optimum() -> None:
    unit = reference_chain().units[3]
    targets = torch.tensor(REFERENCE["targets"])
    x, _, _ = _layerwise.invert_margin(unit, targets, _layerwise.Settings(),
                                       _layerwise.lipschitz(unit, unit.inputs, 0))
    logits = unit(x)
    others = logits.index_put((torch.arange(2), targets), torch.tensor(float("-inf")))
    ours = others.logsumexp(1) - logits[torch.arange(2), targets]
    torch.testing.assert_close(ours, tensor("margin:objective"), rtol=0, atol=1e-4)


@pytest.mark.parametrize(("case", "kernel"), [("plain", 2), ("overlap", 3)])
def test_max_unpooling_matches_the_loops(case: str, kernel: int) -> None:
    inputs = tensor("pool:input")
    pool = nn.MaxPool2d(kernel, 2)
    chain = capture(nn.Sequential(pool, nn.Flatten(), nn.Linear(27, 2)), inputs)
    unpooled = _layerwise.unpool_max(chain.units[0], tensor(f"pool:y_{case}"))
    torch.testing.assert_close(unpooled, tensor(f"pool:{case}"))


def test_attribution_and_amount_match_numpy() -> None:
    inverse, inputs = tensor("ratio:inverse"), tensor("input")
    torch.testing.assert_close(attribution(inverse, inputs), tensor("ratio:heat"),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(amount_of_activation(inverse, inputs), tensor("ratio:amount"),
                               rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("make", [VggNet, PlainNet, FunctionalNet, pool_net],
                         ids=["vgg", "plain", "functional_bn", "pools"])
def test_box_constraints_hold_at_every_layer(make) -> None:
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(2, 3, 16, 16)
    e = xw.explain(bundle(model), x, "layerwise_inverse", target=[0, 1], **FAST)
    chain = capture(model, x)
    layers = e.extras["layer_inverses"]
    assert len(layers) == len(chain) == len(e.extras["layer_names"])
    for unit, inverse in zip(chain.units, layers, strict=True):
        v = unit.inputs
        assert inverse.shape == v.shape
        slack = 1e-6 * (1 + v.abs())
        assert (inverse >= torch.minimum(v, torch.zeros_like(v)) - slack).all(), unit.name
        assert (inverse <= torch.maximum(v, torch.zeros_like(v)) + slack).all(), unit.name
    torch.testing.assert_close(e.map, attribution(e.extras["inverse"], x))
    assert ((e.map >= 0) & (e.map <= 3 + 1e-5)).all()
    assert (e.extras["amount_of_activation"] >= 0).all()
    assert (e.extras["amount_of_activation"] <= 1).all()
    assert (e.extras["reidentified_top5"] >= e.extras["reidentified_top1"]).all()


@pytest.mark.parametrize("make", [PlainNet, FunctionalNet], ids=["plain", "functional_bn"])
def test_without_sparsity_the_inverse_of_the_output_is_the_forward_pass(make) -> None:
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(2, 3, 16, 16)
    chain = capture(model, x)
    settings = _layerwise.Settings(sparsity=0.0, max_iterations=50)
    inverse = _layerwise.invert(chain, settings, start=chain.output)
    for unit, layer in zip(chain.units, inverse.layers, strict=True):
        torch.testing.assert_close(layer, unit.inputs, msg=unit.name)


@pytest.mark.parametrize(("make", "index"), [(PlainNet, 0), (PlainNet, 1), (VggNet, 5)],
                         ids=["image_block", "strided_block", "linear_block"])
def test_without_sparsity_a_block_reproduces_a_reachable_target(make, index: int) -> None:
    # the target is the block's output for a random sub-activation of its forward input
    torch.manual_seed(0)
    chain = capture(make().eval(), torch.randn(2, 3, 16, 16)[..., :16 if make is VggNet else 8,
                                                                :16 if make is VggNet else 8])
    unit = chain.units[index]
    generator = torch.Generator().manual_seed(index)
    with torch.no_grad():
        y = unit(unit.inputs * torch.rand(unit.inputs.shape, generator=generator))
    settings = _layerwise.Settings(sparsity=0.0, max_iterations=1000, tolerance=1e-4,
                                   rescale=False)
    x, _, _ = _layerwise.invert_block(unit, y, 0.0, settings,
                                      _layerwise.lipschitz(unit, unit.inputs, 0))
    low, high = _layerwise.box(unit.inputs)
    assert ((x >= low) & (x <= high)).all()
    with torch.no_grad():
        error = (unit(x) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
    assert (error < 1e-3).all(), error


def test_max_unpooling_is_consistent() -> None:
    # re-pooling the inverse below a max pool gives the inverse above it
    torch.manual_seed(0)
    model = VggNet().eval()
    x = torch.randn(2, 3, 16, 16)
    e = xw.explain(bundle(model), x, "layerwise_inverse", target=[0, 1], **FAST)
    chain = capture(model, x)
    layers = e.extras["layer_inverses"]
    for index, unit in enumerate(chain.units):
        if unit.kind == "maxpool":
            torch.testing.assert_close(unit(layers[index]), layers[index + 1])


def test_reidentification_is_the_inverse_fed_through_the_rest() -> None:
    # the shortcut (closed-form units reuse the logits above) against the definition
    torch.manual_seed(0)
    model = pool_net()
    x = torch.randn(3, 3, 16, 16)
    e = xw.explain(bundle(model), x, "layerwise_inverse", target=[0, 1, 3], **FAST)
    chain = capture(model, x)
    targets = torch.tensor([0, 1, 3])
    with torch.no_grad():
        logits = [chain.forward_from(i, layer) for i, layer in enumerate(
            e.extras["layer_inverses"])]
    top1 = torch.stack([z.argmax(1) == targets for z in logits], 1)
    top5 = torch.stack([(z.topk(4, 1).indices == targets[:, None]).any(1) for z in logits], 1)
    assert torch.equal(e.extras["layer_reidentified_top1"], top1)
    assert torch.equal(e.extras["layer_reidentified_top5"], top5)
    assert [unit.kind for unit in chain.units] == ["block", "avgpool", "block", "maxpool",
                                                   "reshape", "block"]


@pytest.mark.parametrize(("shape", "size", "crop"), [
    ((8, 8, 3, 1, 1), 64, 16),  # VGG-style: 16 outputs from a 16-px crop
    ((3, 4, 11, 4, 2), 160, 128),  # AlexNet-style: 31 outputs
    ((8, 8, 3, 1, 1), 12, 12),  # small enough already
])
def test_step_size_constant_on_a_crop(monkeypatch, shape: tuple[int, ...], size: int,
                                      crop: int) -> None:
    # converged power iterations: the crop's ‖A‖² is a lower bound of the whole input's
    # (a compression of the operator), within 3 % (both estimates to about 0.2 %)
    torch.manual_seed(0)
    channels, out, kernel, stride, padding = shape
    layer = nn.Conv2d(channels, out, kernel, stride=stride, padding=padding)
    model = nn.Sequential(layer, nn.BatchNorm2d(layer.out_channels).eval(), nn.ReLU())
    x = torch.randn(1, layer.in_channels, size, size)
    unit = capture(model, x).units[0]
    assert _layerwise.lipschitz_shape(unit, x) == (1, layer.in_channels, crop, crop)
    monkeypatch.setattr(_layerwise, "POWER_ITERATIONS", 400)
    cropped = _layerwise.lipschitz(unit, x, 0)
    monkeypatch.setattr(_layerwise, "lipschitz_shape", lambda _unit, like: like.shape)
    full = _layerwise.lipschitz(unit, x, 0)
    assert full * 0.97 <= cropped <= full * 1.01, (cropped, full)  # 1 %: power iterations


def test_step_size_constant_of_a_block_with_a_linear_layer_is_not_cropped() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 30 * 30, 4))
    x = torch.randn(1, 3, 32, 32)
    unit = capture(model, x).units[0]
    assert [step.op for step in unit.steps] == ["conv2d", "flatten", "linear"]
    assert _layerwise.lipschitz_shape(unit, x) == (1, 3, 32, 32)


def test_known_answer_keeps_the_evidence_and_drops_the_counter_evidence() -> None:
    # channel 0 of the input speaks for class 0, channel 1 against it
    conv = nn.Conv2d(3, 2, 1, bias=False)
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = conv.weight[1, 1] = 1.0
        head.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()
    x = torch.rand(1, 3, 8, 8) + 0.1  # all positive: every input is alive
    e = xw.explain(bundle(model, size=8), x, "layerwise_inverse", target=0, rescale=False,
                   sparsity=0.1)
    kept = e.extras["inverse"][0] / x[0]
    assert (kept[0] > 0.9).all()
    assert (kept[1] < 1e-3).all()
    assert bool(e.extras["reidentified_top1"][0])


def test_batch_equals_one_by_one_and_deterministic() -> None:
    model = VggNet().eval()
    x = torch.randn(2, 3, 16, 16)
    together = xw.explain(bundle(model), x, "layerwise_inverse", target=[0, 4], **QUICK)
    again = xw.explain(bundle(model), x, "layerwise_inverse", target=[0, 4], **QUICK)
    assert torch.equal(together.map, again.map)
    for i, t in enumerate([0, 4]):
        alone = xw.explain(bundle(model), x[i:i + 1], "layerwise_inverse", target=t, **QUICK)
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-3, atol=1e-4)
        assert torch.equal(together.extras["iterations"][i:i + 1], alone.extras["iterations"])


@pytest.mark.parametrize(("make", "match"), [
    (InplaceResNet, "residual or branching"),
    (Relu6Net, "hardtanh"),
])
def test_unsupported_networks_are_refused_clearly(make, match: str) -> None:
    with pytest.raises(xw.MethodError, match=match):
        xw.explain(bundle(make()), torch.randn(1, 3, 16, 16), "layerwise_inverse", **FAST)


@pytest.mark.parametrize(("params", "error"), [
    ({"max_iterations": 0}, xw.ParameterError),
    ({"sparsity": -1.0}, xw.ParameterError),
    ({"layer": "features.3"}, xw.MethodError),
])
def test_bad_settings_raise_clear_errors(params: dict, error: type) -> None:
    with pytest.raises(error):
        xw.explain(bundle(VggNet()), torch.randn(1, 3, 16, 16), "layerwise_inverse", **params)


def test_progress_previews_and_cancel_leave_the_model_unchanged() -> None:
    model = VggNet().train()
    before = snapshot(model)
    fractions: list[float] = []

    def progress(fraction: float, preview: torch.Tensor | None) -> None:
        fractions.append(fraction)
        if len(fractions) == 4:
            raise Cancelled

    with pytest.raises(Cancelled):
        xw.explain(bundle(model), torch.randn(1, 3, 16, 16), "layerwise_inverse",
                   max_iterations=50, tolerance=0.0, report_every=10, progress=progress)
    assert fractions == sorted(fractions)
    assert 0 < fractions[0] < fractions[-1] < 1
    assert_same(before, snapshot(model))


def test_sparsity_sweep_points_and_plot() -> None:
    model = VggNet().eval()
    x = torch.randn(2, 3, 16, 16)
    result = sparsity_sweep(bundle(model), x, sparsities=(0.0, 3.0), **QUICK)
    assert result.sparsity.tolist() == [0.0, 3.0]
    assert result.amount[0] > result.amount[1]
    assert ((result.top1 >= 0) & (result.top1 <= result.top5) & (result.top5 <= 1)).all()
    figure = result.plot()
    assert figure.axes[0].get_xlabel().startswith("amount of activation")


# ------------------------------------------------------------------------- regression


def small_vdsr(seed: int = 0) -> nn.Module:
    """A VDSR-like residual network (conv + ReLU ×3, conv), returning the residual."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.ReLU()]
    for _ in range(2):
        layers += [nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU()]
    layers.append(nn.Conv2d(8, 1, 3, padding=1, bias=False))
    return nn.Sequential(*layers).eval()


def test_regression_inverse_stays_in_the_receptive_field() -> None:
    model = small_vdsr()
    x = torch.rand(1, 1, 20, 20) + 0.1
    result = invert_regression(model, x, region=(8, 8, 12, 12), max_iterations=300)
    # four 3×3 convolutions see 4 pixels around the region: outside, nothing is needed
    outside = torch.ones(20, 20, dtype=torch.bool)
    outside[4:16, 4:16] = False
    kept = result.attribution[0, 0]
    assert kept[outside].mean() < 0.05 * kept[8:12, 8:12].mean()
    assert (result.inverse * x >= 0).all()
    assert (result.inverse.abs() <= x.abs() + 1e-6).all()
    assert set(result.psnr()) == {"output", "input"}


def test_regression_region_checks() -> None:
    with pytest.raises(xw.ParameterError, match="not inside"):
        invert_regression(small_vdsr(), torch.rand(1, 1, 8, 8), region=(0, 0, 9, 4))


# ------------------------------------------------------------------------- frequency bands


def test_dct_matrix_and_zigzag() -> None:
    d = dct_matrix(8)
    torch.testing.assert_close(d @ d.T, torch.eye(8, dtype=torch.float64))
    assert zigzag(8)[:6] == [(0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2)]
    assert zigzag(8)[-1] == (7, 7)
    assert len(set(zigzag(8))) == 64


def test_frequency_bands_of_known_patterns() -> None:
    # a constant image has only the DC band, of value 8 · c for an orthonormal 8×8 DCT
    constant = torch.full((16, 24), 0.5)
    weights = torch.zeros(16, 24)
    weights[:8, :8] = 1.0
    bands = frequency_bands(constant, weights)
    assert (bands.focused_patches, bands.patches) == (1, 6)
    assert bands.focused[0] == pytest.approx(4.0)
    assert np.abs(bands.all[1:]).max() < 1e-12
    # a horizontal cosine of frequency 1 in every patch lands in band (0, 1) = zig-zag 1
    j = torch.arange(24, dtype=torch.float64)
    wave = torch.cos(math.pi * (2 * (j % 8) + 1) / 16).expand(16, 24)
    spectrum = frequency_bands(wave, weights).all
    assert int(np.argmax(spectrum)) == 1
    assert spectrum[1] == pytest.approx(math.sqrt(2) * 4)


def test_frequency_bands_reject_mismatched_sizes() -> None:
    with pytest.raises(xw.ParameterError, match="same size"):
        frequency_bands(torch.zeros(16, 16), torch.zeros(8, 16))


def test_regression_flow_on_the_vdsr_like_network() -> None:
    model = small_vdsr()
    x = F.interpolate(torch.rand(1, 1, 8, 8), size=16, mode="bilinear")
    result = invert_regression(model, x, max_iterations=50)
    bands = frequency_bands(x[0], result.attribution[0])
    assert bands.patches == 4
    assert bands.plot().axes
