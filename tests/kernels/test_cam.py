"""CAM: hand values, the rectified (DenseNet-style) head, refusals, the reference, batching."""

from __future__ import annotations

import pytest
import torch
from support import load_reference, reference_nets
from tiny_models import (
    ClassMapNet,
    FunctionalNet,
    InplaceResNet,
    OneConv,
    VggNet,
    bundle,
    randomise_batchnorm,
)

import xai_widgets as xw

REFERENCE = load_reference("cam")


def test_one_conv_by_hand() -> None:
    weight = [[2.0, -1.0], [0.5, 3.0]]
    p, q = torch.randn(4, 4), torch.randn(4, 4)
    x = torch.stack([p, q, torch.randn(4, 4)])[None]
    for c in (0, 1):
        e = xw.explain(bundle(OneConv(weight), size=4), x, "cam", target=c)
        assert e.layer == "conv"
        torch.testing.assert_close(e.map[0], weight[c][0] * p + weight[c][1] * q,
                                   rtol=1e-6, atol=1e-6)


def test_class_map_head_by_hand() -> None:
    # no linear layer: the logit of class c is mean(relu(x_c)), so CAM is relu(x_c)
    x = torch.randn(2, 3, 6, 6)
    e = xw.explain(bundle(ClassMapNet(), size=6), x, "cam", target=[2, 0])
    torch.testing.assert_close(e.map, torch.stack([x[0, 2].relu(), x[1, 0].relu()]))


@pytest.mark.parametrize("variant", ["module", "inplace", "functional"])
def test_matches_numpy_reference(variant: str) -> None:
    net = reference_nets.tiny_net(REFERENCE, variant)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    e = xw.explain(bundle(net, size=8), x, "cam", target=REFERENCE["targets"].tolist())
    assert e.layer == "features"
    assert e.extras["rectified_head"] is (variant == "functional")
    expected = torch.tensor(REFERENCE["map"], dtype=torch.float32)
    torch.testing.assert_close(e.map, expected, rtol=1e-5, atol=1e-6)


def test_reference_is_not_the_unrectified_map() -> None:
    # the functional variant's pooled tensor is pre-ReLU: forgetting the ReLU must show
    difference = REFERENCE["map"] - REFERENCE["map_unrectified"]
    assert abs(difference).max() > 0.1 * abs(REFERENCE["map"]).max()


def test_rectified_head_weights_relu_of_the_layer() -> None:
    # DenseNet's ending: `features` ends in BatchNorm, F.relu(inplace=True) follows in forward
    net = randomise_batchnorm(FunctionalNet().eval())
    x = torch.randn(2, 3, 16, 16)
    e = xw.explain(bundle(net), x, "cam", target=[1, 4])
    with torch.no_grad():
        features = net.features(x)
    weight = net.classifier.weight.detach()[[1, 4]]
    assert (features < 0).float().mean() > 0.2  # else the ReLU would not matter
    expected = torch.einsum("nk,nkhw->nhw", weight, features.relu())
    wrong = torch.einsum("nk,nkhw->nhw", weight, features)
    assert e.layer == "features"
    assert e.extras["rectified_head"] is True
    torch.testing.assert_close(e.map, expected, rtol=1e-5, atol=1e-6)
    assert (e.map - wrong).abs().max() > 0.1 * expected.abs().max()


def test_accepts_the_pooled_layer_by_any_of_its_names() -> None:
    net = reference_nets.tiny_net(REFERENCE, "module")
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    expected = torch.tensor(REFERENCE["map"], dtype=torch.float32)
    for layer in ("features", "features.3", net.features[3]):
        e = xw.explain(bundle(net, size=8), x, "cam", target=REFERENCE["targets"].tolist(),
                       layer=layer)
        assert e.layer == "features"
        torch.testing.assert_close(e.map, expected, rtol=1e-5, atol=1e-6)


def test_refuses_a_head_without_global_pooling() -> None:
    with pytest.raises(xw.MethodError, match="grad_cam"):
        xw.explain(bundle(VggNet().eval()), torch.randn(1, 3, 16, 16), "cam", target=0)


@pytest.mark.parametrize("layer", ["features.0", "features.1", "features.2"])
def test_refuses_other_layers(layer: str) -> None:
    net = reference_nets.tiny_net(REFERENCE, "module")
    with pytest.raises(xw.MethodError, match="grad_cam") as raised:
        xw.explain(bundle(net, size=8), torch.randn(1, 3, 8, 8), "cam", target=0, layer=layer)
    assert "'features'" in str(raised.value)  # names the layer it is defined at


@pytest.mark.parametrize(("make", "size"), [
    (lambda: reference_nets.tiny_net(REFERENCE, "functional"), 8),
    (lambda: randomise_batchnorm(InplaceResNet().eval()), 16),
    (lambda: randomise_batchnorm(FunctionalNet().eval()), 16),
])
def test_mean_of_the_map_plus_bias_is_the_logit(make, size: int) -> None:
    # CAM decomposes the logit: mean_ij CAM_c(i, j) + b_c = y_c
    net = make()
    x = torch.randn(3, 3, size, size)
    targets = [0, 2, 4]
    e = xw.explain(bundle(net, size=size), x, "cam", target=targets)
    bias = next(m for m in net.modules() if isinstance(m, torch.nn.Linear)).bias.detach()
    with torch.no_grad():
        logits = net(x.clone())[torch.arange(3), targets]
    torch.testing.assert_close(e.map.mean(dim=(1, 2)) + bias[targets], logits,
                               rtol=1e-5, atol=1e-5)


def test_batch_equals_one_by_one() -> None:
    net = randomise_batchnorm(InplaceResNet().eval())
    b = bundle(net)
    x = torch.randn(3, 3, 16, 16)
    together = xw.explain(b, x, "cam", target=[0, 4, 2])
    for i, t in enumerate([0, 4, 2]):
        alone = xw.explain(b, x[i:i + 1], "cam", target=t)
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-5, atol=1e-6)


class _MaxPoolThenGap(torch.nn.Module):
    """conv -> ReLU (``features``), then a top-level ``MaxPool2d`` (``pool``), GAP, linear:
    a GAP + linear head whose pooled tensor is a pooling module's output, which is never the
    default layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1),
                                            torch.nn.ReLU())
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).mean(dim=(2, 3)))


def test_finds_the_pooled_layer_when_it_is_not_the_default() -> None:
    net = _MaxPoolThenGap().eval()
    x = torch.randn(2, 3, 8, 8)
    e = xw.explain(bundle(net, size=8), x, "cam", target=[0, 2])  # works with layer="pool"
    with torch.no_grad():
        pooled = net.pool(net.features(x))
    assert e.layer == "pool"
    torch.testing.assert_close(
        e.map, torch.einsum("nk,nkhw->nhw", net.fc.weight.detach()[[0, 2]], pooled))
