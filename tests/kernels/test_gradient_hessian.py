"""Gradient–Hessian (2ndG): the finite-difference NumPy reference, the closed form against a
full double-backward Hessian on small models, the exact fallback above smooth activations,
no backward at all on a global-average-pooling head, the embedded model, errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from support import load_reference, reference_nets
from tiny_models import ARCHITECTURES, bundle, randomise_batchnorm
from torch import nn

import xai_widgets as xw

REFERENCE = load_reference("gradient_hessian")


@pytest.mark.parametrize("layer", ["features.1", "features.3"])
@pytest.mark.parametrize("score", ["sigmoid", "probability", "logit"])
def test_matches_finite_difference_reference(layer: str, score: str) -> None:
    net = reference_nets.tiny_net(REFERENCE)
    x = torch.tensor(REFERENCE["input"], dtype=torch.float32)
    e = xw.explain(bundle(net, size=8), x, "gradient_hessian",
                   target=REFERENCE["targets"].tolist(), layer=layer, score=score)
    for key, name in (("map", None), ("first", "first_order"), ("second", "second_order")):
        got = e.map if name is None else e.extras[name]
        expected = torch.tensor(REFERENCE[f"{key}:{score}:{layer}"], dtype=torch.float32)
        torch.testing.assert_close(got, expected, rtol=1e-4,
                                   atol=1e-5 * float(expected.abs().max()) + 1e-9)


def hessian_blocks(head: Callable[[torch.Tensor], torch.Tensor], activation: torch.Tensor,
                   target: int, score: str) -> torch.Tensor:
    """``a_ijᵀ H_ij a_ij`` from the full Hessian of ``s(head(A))`` (double backward)."""
    def s(a: torch.Tensor) -> torch.Tensor:
        logits = head(a[None].double())[0]
        if score == "sigmoid":
            return torch.sigmoid(logits[target])
        if score == "probability":
            return logits.softmax(dim=0)[target]
        return logits[target]

    a = activation.double()
    k, h, w = a.shape
    hessian = torch.autograd.functional.hessian(s, a, vectorize=True).view(k, h, w, k, h, w)
    out = torch.zeros(h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            out[i, j] = a[:, i, j] @ hessian[:, i, j, :, i, j] @ a[:, i, j]
    return out


def double(module: nn.Module) -> nn.Module:
    return module.double().eval()


CASES = {
    # (architecture, layer, head from that layer's output to the logits)
    "plain@features.1": ("plain", "features.1",
                         lambda m: lambda a: m.fc(m.features[3](m.features[2](a))
                                                  .mean(dim=(2, 3)))),
    "plain@features": ("plain", "features", lambda m: lambda a: m.fc(a.mean(dim=(2, 3)))),
    "resnet@layer1": ("inplace_resnet", "layer1",
                      lambda m: lambda a: m.fc(torch.flatten(m.avgpool(m.layer2(a.clone())), 1))),
    "vgg@features.4": ("vgg", "features.4",
                       lambda m: lambda a: m.classifier(torch.flatten(m.features[5](a), 1))),
    "relu6@features.3": ("relu6", "features.3",
                         lambda m: lambda a: m.classifier(m.features[4](a).mean(dim=(2, 3)))),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("score", ["sigmoid", "probability"])
def test_equals_double_backward(case: str, score: str) -> None:
    kind, layer, make_head = CASES[case]
    torch.manual_seed(3)
    net = randomise_batchnorm(ARCHITECTURES[kind]()).eval()
    size = 16 if kind == "vgg" else 8  # VggNet's classifier needs 16×16 inputs
    b = bundle(net, size=size)
    x = torch.randn(2, 3, size, size)
    e = xw.explain(b, x, "gradient_hessian", target=[1, 3], layer=layer, score=score)
    reference_net = double(ARCHITECTURES[kind]())
    reference_net.load_state_dict(net.state_dict())
    head = make_head(reference_net)
    with torch.no_grad():
        features = _activation(net, layer, x)
    for i, t in enumerate([1, 3]):
        expected = 0.5 * hessian_blocks(head, features[i], t, score).abs()
        torch.testing.assert_close(e.extras["second_order"][i].double(), expected,
                                   rtol=1e-4, atol=1e-6 * float(expected.abs().max()) + 1e-12)
    # piecewise linear above the layer: closed form; Hardswish above relu6's features.3: exact
    # batched Hessian-vector products instead
    linear_above = kind != "relu6"
    gap_layer = layer in ("features",)
    assert e.extras["closed_form"] == (linear_above and (score == "sigmoid" or gap_layer))


def _activation(net: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    out: list[torch.Tensor] = []
    handle = dict(net.named_modules())[layer].register_forward_hook(
        lambda _m, _a, output: out.append(output.clone()))
    try:
        net.eval()(x)
    finally:
        handle.remove()
    return out[0]


def test_no_backward_at_the_pooled_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    net = ARCHITECTURES["plain"]().eval()
    b = bundle(net)
    x = torch.randn(2, 3, 16, 16)
    calls: list[int] = []
    grad = torch.autograd.grad

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return grad(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.autograd, "grad", counting)
    for score in ("sigmoid", "probability", "logit"):
        e = xw.explain(b, x, "gradient_hessian", target=[0, 2], layer="features", score=score)
        assert e.extras["closed_form"]
    assert calls == []


def test_embedded_model_default_layer(embedded, photos) -> None:
    e = xw.explain(embedded, photos["chelsea"], "gradient_hessian")
    assert e.layer == embedded.layers.default
    assert e.extras["closed_form"]
    assert e.map.shape == (1, 7, 7)
    assert torch.isfinite(e.map).all() and (e.map >= 0).all()
    assert e.extras["second_order"].max() > 0


def test_bad_score_raises() -> None:
    b = bundle(ARCHITECTURES["plain"]().eval())
    with pytest.raises(xw.ParameterError, match="'score' must be one of"):
        xw.explain(b, torch.randn(1, 3, 16, 16), "gradient_hessian", score="entropy")


@pytest.mark.parametrize("score", ["sigmoid", "probability"])
def test_batch_equals_one_by_one(score: str) -> None:
    b = bundle(randomise_batchnorm(ARCHITECTURES["inplace_resnet"]()).eval(), size=8)
    x = torch.randn(3, 3, 8, 8)
    together = xw.explain(b, x, "gradient_hessian", target=[0, 2, 4], layer="layer1",
                          score=score, chunk_size=5)
    for i, t in enumerate([0, 2, 4]):
        alone = xw.explain(b, x[i:i + 1], "gradient_hessian", target=t, layer="layer1",
                           score=score)
        torch.testing.assert_close(together.map[i:i + 1], alone.map, rtol=1e-4, atol=1e-8)
