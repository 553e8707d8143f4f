"""Excitation backprop: a hand computation on a two-layer net, the NumPy reference, mass
conservation from layer to layer, batch-norm folding, VGG / ResNet / EfficientNet-Lite0."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision
from support import load_reference, reference_nets
from tiny_models import ARCHITECTURES, bundle, randomise_batchnorm
from torch import nn
from torchvision.models.vgg import VGG, make_layers

import xai_widgets as xw
from xai_widgets.trace import INPUT, TraceSet

REFERENCE = load_reference("excitation_backprop")


class TwoLayer(nn.Module):
    """1×1 conv (3 -> 2, no bias), ReLU, global average pool, linear (2 -> 2, no bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 3.0]])
                                   .view(2, 3, 1, 1))
            self.fc.weight.copy_(torch.tensor([[2.0, 1.0], [-0.5, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def test_two_layer_net_by_hand() -> None:
    # two pixels p, q with inputs (1, 2, 3) and (2, 1, 0.5)
    x = torch.tensor([[1.0, 2.0], [2.0, 1.0], [3.0, 0.5]]).view(1, 3, 1, 2)
    # hidden units: a0 = relu(x0 + 2 x1 − x2), a1 = relu(0.5 x0 − x1 + 3 x2)
    a0p, a0q = 1 + 4 - 3, 2 + 2 - 0.5           # 2, 3.5
    a1p, a1q = 0.5 - 2 + 9, 1 - 1 + 1.5          # 7.5, 1.5
    m0, m1 = (a0p + a0q) / 2, (a1p + a1q) / 2     # 2.75, 4.5
    # top (class 0, weights 2 and 1, both excitatory): P(m_k) ∝ m_k w_k
    pm0, pm1 = 2 * m0 / (2 * m0 + 1 * m1), 1 * m1 / (2 * m0 + 1 * m1)
    # average pool: P(a_k(p)) = a_k(p) / Σ_p a_k(p) · P(m_k)
    p0p, p0q = a0p / (a0p + a0q) * pm0, a0q / (a0p + a0q) * pm0
    p1p, p1q = a1p / (a1p + a1q) * pm1, a1q / (a1p + a1q) * pm1
    # conv: P(x_i(p)) = Σ_k x_i(p) w⁺_ki / Σ_i' x_i'(p) w⁺_ki' · P(a_k(p))
    z0p, z0q = 1 + 4, 2 + 2                       # excitatory inputs of unit 0: x0 + 2 x1
    z1p, z1q = 0.5 + 9, 1 + 1.5                   # of unit 1: 0.5 x0 + 3 x2
    at_input = torch.tensor([
        [[1 * p0p / z0p + 0.5 * p1p / z1p, 2 * p0q / z0q + 1 * p1q / z1q]],
        [[4 * p0p / z0p, 2 * p0q / z0q]],
        [[9 * p1p / z1p, 1.5 * p1q / z1q]],
    ])[None]
    b = bundle(TwoLayer().eval(), size=2)
    b.preprocessing = xw.Preprocessing(resize=None, crop=(1, 2), mean=(0.0, 0.0, 0.0),
                                       std=(1.0, 1.0, 1.0))
    e = xw.explain(b, x, "excitation_backprop", target=0, layer="relu")
    expected = torch.tensor([[[p0p + p1p, p0q + p1q]]])
    torch.testing.assert_close(e.map, expected, rtol=1e-6, atol=1e-7)
    trace = TraceSet(b, x).get("excitation", ["relu"])
    torch.testing.assert_close(trace.gradient((0,), INPUT), at_input, rtol=1e-6, atol=1e-7)
    assert abs(float(at_input.sum()) - 1.0) < 1e-6


@pytest.mark.parametrize(("variant", "layer", "reference_layer"), [
    ("module", "features.0", "features.0"), ("module", "features.1", "features.1"),
    ("module", "features.2", "features.2"), ("module", "features.3", "features.3"),
    ("inplace", "features", "features.3"), ("functional", "features.1", "features.1"),
])
def test_matches_numpy_reference(variant: str, layer: str, reference_layer: str) -> None:
    net = reference_nets.tiny_net(REFERENCE, variant)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    targets = REFERENCE["targets"].tolist()
    b = bundle(net, size=8)
    e = xw.explain(b, x, "excitation_backprop", target=targets, layer=layer)
    expected = torch.tensor(REFERENCE[f"map:{reference_layer}"], dtype=torch.float32)
    torch.testing.assert_close(e.map, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(e.extras["mass"], torch.ones(2), rtol=1e-5, atol=1e-6)
    at_input = TraceSet(b, x).get("excitation").gradient(tuple(targets), INPUT)
    torch.testing.assert_close(at_input, torch.tensor(REFERENCE["mass:input"]).float(),
                               rtol=1e-5, atol=1e-7)


def without_biases(model: nn.Module) -> nn.Module:
    """Zero every bias and batch-norm shift (random scales kept): EB then loses no mass."""
    randomise_batchnorm(model, seed=1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.bias.zero_()
                module.running_mean.zero_()
            elif getattr(module, "bias", None) is not None:
                module.bias.zero_()
    return model.eval()


@pytest.mark.parametrize("kind", list(ARCHITECTURES))
def test_mass_is_conserved_from_layer_to_layer(kind: str) -> None:
    net = without_biases(ARCHITECTURES[kind]())
    b = bundle(net)
    x = torch.randn(2, 3, 16, 16)
    # the layers every path crosses (inside a residual block only part of the mass flows)
    layers = [n for n in b.layers.names if not n.startswith(("layer1.", "layer2."))]
    trace = TraceSet(b, x, layers).get("excitation", layers)
    for name in [*layers, INPUT]:
        mass = trace.gradient((1, 3), name)
        assert (mass >= 0).all(), name
        torch.testing.assert_close(mass.flatten(1).sum(dim=1), torch.ones(2), rtol=1e-5,
                                   atol=1e-5, msg=name)


def test_batch_norm_is_folded_into_the_convolution() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 6, 3, padding=1)
    bn = randomise_batchnorm(nn.Sequential(nn.BatchNorm2d(6)))[0]
    with torch.no_grad():
        bn.weight[:3] *= -1  # negative scales flip which weights are excitatory
    head = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1), nn.ReLU())
    fc = nn.Linear(4, 5)
    with_bn = nn.Sequential(conv, bn, *head)
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    folded = nn.Conv2d(3, 6, 3, padding=1)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        folded.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
    without_bn = nn.Sequential(folded, *head)

    class Net(nn.Module):
        def __init__(self, features: nn.Module) -> None:
            super().__init__()
            self.features, self.fc = features, fc

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.features(x).mean(dim=(2, 3)))

    x = torch.randn(2, 3, 8, 8)
    a = xw.explain(bundle(Net(with_bn).eval(), size=8), x, "excitation_backprop",
                   target=[0, 3], layer="features.3")
    b = xw.explain(bundle(Net(without_bn).eval(), size=8), x, "excitation_backprop",
                   target=[0, 3], layer="features.2")
    torch.testing.assert_close(a.map, b.map, rtol=1e-5, atol=1e-7)
    ta = TraceSet(bundle(Net(with_bn).eval(), size=8), x).get("excitation")
    tb = TraceSet(bundle(Net(without_bn).eval(), size=8), x).get("excitation")
    torch.testing.assert_close(ta.gradient((0, 3), INPUT), tb.gradient((0, 3), INPUT),
                               rtol=1e-5, atol=1e-7)


class SmallVgg(VGG):
    """torchvision's VGG (its forward, module types and head layout) with fewer channels:
    vgg11's 130M-parameter classifier takes seconds to initialise."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.features = make_layers([16, "M", 32, "M", 32, 32, "M"])
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(32 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 64),
            nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10))


@pytest.mark.parametrize("make", [SmallVgg, lambda: torchvision.models.resnet18(num_classes=10)],
                         ids=["vgg", "resnet18"])
def test_torchvision_architectures(make) -> None:
    torch.manual_seed(0)
    net = make().eval()
    b = xw.ModelBundle(net, xw.Preprocessing(resize=None, crop=(32, 32)))
    x = torch.randn(1, 3, 32, 32)
    layers = b.layers.names[-6:]
    trace = TraceSet(b, x, layers).get("excitation", layers)
    masses = [float(trace.gradient((3,), n).sum()) for n in [*layers, INPUT]]
    assert all(0 <= m <= 1 + 1e-5 for m in masses)
    assert (trace.gradient((3,), INPUT) >= 0).all()
    e = xw.explain(b, x, "excitation_backprop", target=3)
    assert e.map.shape == (1, *b.layers[b.layers.default].shape[1:])
    assert (e.map >= 0).all()


def test_embedded_efficientnet(embedded, photos) -> None:
    x = embedded.prepare(photos["chelsea"]).inputs
    layers = ["blocks.3", "blocks.5", "bn2"]
    trace = TraceSet(embedded, x, layers).get("excitation", layers)
    masses = [float(trace.gradient((281,), n).sum()) for n in ["bn2", "blocks.5", "blocks.3",
                                                                INPUT]]
    assert masses[0] == pytest.approx(1.0, abs=1e-5)
    # mass is lost only to biases (EB ignores them), never created
    assert all(later <= earlier + 1e-6 for earlier, later in itertools.pairwise(masses))
    assert masses[-1] > 0
    for name in ["bn2", "blocks.3", INPUT]:
        mass = trace.gradient((281,), name)
        assert torch.isfinite(mass).all() and (mass >= 0).all()


def test_batch_equals_one_by_one() -> None:
    net = randomise_batchnorm(ARCHITECTURES["inplace_resnet"]()).eval()
    b = bundle(net)
    x = torch.randn(3, 3, 16, 16)
    together = xw.explain(b, x, "excitation_backprop", target=[0, 1, 4], layer="layer1")
    for i, t in enumerate([0, 1, 4]):
        alone = xw.explain(b, x[i:i + 1], "excitation_backprop", target=t, layer="layer1")
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-5, atol=1e-7)
