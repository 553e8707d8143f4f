"""Deliberative explanations: exact values on hand-weighted models, and identities with the
engine (batched class backward == one backward per class; layer IG == the registered method;
closed-form gradient–Hessian == batched Hessian-vector products)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_models import OneConv, PlainNet, VggNet, bundle
from torch import nn

import xai_widgets as xw
from xai_widgets import deliberative as dl
from xai_widgets.deliberative import ambiguity, maps
from xai_widgets.deliberative.core import rank_pairs
from xai_widgets.trace import TraceSet


class FlatHead(nn.Module):
    """Layer ``conv``: a 1×1 identity conv, ``A = x[:, :2]``; then flatten and a linear layer
    ``W`` ``(C, 2, h, w)`` with bias ``b``: ``z_c = Σ W[c] ⊙ A + b_c``, so the class map is
    ``a_c(i, j) = Σ_k A_k(i, j) W[c, k, i, j]`` and no head gives it in closed form."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0
            self.conv.weight[1, 1] = 1.0
        self.fc = nn.Linear(weight[0].numel(), len(weight))
        with torch.no_grad():
            self.fc.weight.copy_(weight.flatten(1))
            self.fc.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def by_hand(weight: np.ndarray, bias: np.ndarray, a: np.ndarray):
    """Logits, class maps (all classes) and the cs / entropy difficulty maps, NumPy float64."""
    z = (weight * a[None]).sum(axis=(1, 2, 3)) + bias
    p = softmax(z)
    classes = len(z)
    class_maps = (weight * a[None]).sum(axis=1)  # (C, h, w)
    m = int(np.argmax(p))
    ds_cs = -p[m] * ((np.arange(classes) == m) - p)
    entropy = -(p * np.log(p)).sum()
    ds_entropy = -p * (np.log(p) + entropy) / math.log(classes)
    maps_out = {}
    for name, ds in (("cs", ds_cs), ("entropy", ds_entropy)):
        grad = np.tensordot(ds, weight, axes=1)  # (2, h, w)
        maps_out[name] = (a * np.clip(grad, 0, None)).sum(axis=0)
    scores = {"cs": 1 - p.max(), "entropy": entropy / math.log(classes)}
    return z, p, class_maps, maps_out, scores


@pytest.fixture
def flat() -> tuple[xw.ModelBundle, np.ndarray, np.ndarray, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(4, 2, 4, 4, generator=generator).double()
    bias = torch.tensor([0.1, -0.2, 0.3, 0.0]).double()
    model = FlatHead(weight.float(), bias.float())
    x = torch.rand(1, 3, 4, 4, generator=generator)
    return bundle(model, 4, classes=4), weight.numpy(), bias.numpy(), x


@pytest.mark.parametrize("difficulty", ["cs", "entropy"])
def test_class_and_difficulty_maps_by_hand(flat, difficulty: str) -> None:
    b, weight, bias, x = flat
    a = x[0, :2].double().numpy()
    # the float32 model's own logits decide the ranks; the values are compared by hand
    _z, p, class_maps, difficulty_maps, scores = by_hand(weight.astype(np.float32), bias.astype(
        np.float32), a.astype(np.float32))
    r = dl.insecurities(b, x, difficulty=difficulty, top_classes=3)
    order = np.argsort(-p, kind="stable")[:3]
    assert [c for c, _, _ in r.classes] == order.tolist()
    np.testing.assert_allclose(r.class_maps.numpy(), class_maps[order], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.difficulty.map.numpy(), difficulty_maps[difficulty],
                               rtol=1e-4, atol=1e-7)
    assert r.difficulty.score == pytest.approx(scores[difficulty], rel=1e-5)
    assert r.layer == "conv"


def test_closed_form_head_gives_the_same_maps_as_by_hand() -> None:
    # OneConv: A = [P, Q], z = W mean(A): a_c(i, j) = Σ_k A_k(i, j) W[c, k] / (h w)
    weight = [[1.0, -2.0], [0.5, 1.5], [-1.0, 0.25]]
    b = bundle(OneConv(weight), 4, classes=3)
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    w = np.array(weight)
    a = x[0, :2].double().numpy()
    full = np.concatenate([np.repeat(np.repeat(w[:, :, None, None], 4, 2), 4, 3) / 16], 0)
    _z, p, class_maps, difficulty_maps, _scores = by_hand(full, np.zeros(3), a)
    r = dl.insecurities(b, x, difficulty="entropy", top_classes=3)
    order = np.argsort(-p)
    np.testing.assert_allclose(r.class_maps.numpy(), class_maps[order], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(r.difficulty.map.numpy(), difficulty_maps["entropy"], rtol=1e-4,
                               atol=1e-8)


@pytest.mark.parametrize("model", [PlainNet, VggNet])
def test_batched_class_backward_equals_one_backward_per_class(model) -> None:
    torch.manual_seed(0)
    b = bundle(model(6), 16, classes=6)
    x = torch.randn(2, 3, 16, 16)
    results = dl.analyse(b, x, top_classes=4)
    layer = b.layers.default
    traces = TraceSet(b, x, [layer])
    trace = traces.get("gradient", [layer])
    activation = trace.activation(layer)
    for i, r in enumerate(results):
        for rank, (c, _, _) in enumerate(r.classes):
            targets = tuple(int(t) for t in trace.logits.topk(4, dim=1).indices[:, rank])
            assert targets[i] == c
            expected = (trace.gradient(targets, layer) * activation).sum(dim=1)[i]
            torch.testing.assert_close(r.class_maps[rank], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", [PlainNet, VggNet])
def test_integrated_gradients_class_maps_equal_the_layer_ig_method(model) -> None:
    torch.manual_seed(0)
    b = bundle(model(5), 16, classes=5)
    x = torch.randn(1, 3, 16, 16)
    r = dl.insecurities(b, x, attribution="integrated_gradients", top_classes=3, ig_steps=5,
                        chunk_size=4)
    for rank, (c, _, _) in enumerate(r.classes):
        e = xw.explain(b, x, "layer_integrated_gradients", target=c, n_steps=5, chunk_size=4,
                       path="input")
        torch.testing.assert_close(r.class_maps[rank], e.map[0], rtol=1e-4, atol=1e-6)
    assert r.difficulty.map.min() >= 0


# ---------------------------------------------------------------------------- hardness predictor


class Linear2(nn.Module):
    """A piecewise-linear predictor on a layer: ``z = v · relu(mean_hw(A)) + c``."""

    def __init__(self, channels: int, layer: str, output: str = "sigmoid") -> None:
        super().__init__()
        self.layer, self.output = layer, output
        self.fc = nn.Linear(channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3)).relu())[:, 0]


class Smooth(Linear2):
    """Not piecewise linear (a tanh): the Hessian blocks must come from double backward."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(features).mean(dim=(2, 3)))[:, 0]


@pytest.mark.parametrize("kind", [Linear2, Smooth])
def test_gradient_hessian_closed_form_equals_hessian_vector_products(kind) -> None:
    torch.manual_seed(0)
    b = bundle(VggNet(5), 16, classes=5)
    layer = b.layers.default
    predictor = kind(8, layer)
    with torch.no_grad():
        predictor.fc.weight.mul_(20)
    x = torch.randn(2, 3, 16, 16)
    analysis = dl.Analysis(b, x, top_classes=3)
    spec = analysis.spec(predictor)
    trace = analysis.traces.get("gradient", [layer])
    rows = maps.batched_gradients(trace, layer, None, spec)
    quadratic, closed = maps.quadratic_term(trace, layer, spec, rows)
    assert closed == (kind is Linear2)
    exact = maps._hessian_blocks(trace, layer, spec, chunk_size=5)
    torch.testing.assert_close(quadratic, exact, rtol=1e-4, atol=1e-9)
    assert float(quadratic.abs().max()) > 0
    r = analysis.result(0, predictor, "gradient_hessian")
    torch.testing.assert_close(r.difficulty.map,
                               r.difficulty.first_order + r.difficulty.second_order)
    # s = z (pre-sigmoid): no curvature where the predictor is piecewise linear, and the
    # first-order term is the sigmoid's divided by σ'(z)
    logit = analysis.result(0, predictor, "gradient_hessian", hp_score="logit")
    if kind is Linear2:
        assert float(logit.difficulty.second_order.abs().max()) == 0.0
    z = float(logit.difficulty.score)
    slope = 1 / (1 + math.exp(-z)) * (1 - 1 / (1 + math.exp(-z)))
    torch.testing.assert_close(r.difficulty.first_order, slope * logit.difficulty.first_order,
                               rtol=1e-4, atol=1e-9)


def test_hardness_predictor_score_and_map_by_hand() -> None:
    torch.manual_seed(0)
    b = bundle(PlainNet(5), 16, classes=5)
    layer = b.layers.default
    predictor = Linear2(8, layer)
    x = torch.randn(1, 3, 16, 16)
    r = dl.insecurities(b, x, difficulty="hp", predictor=predictor, top_classes=3)
    trace = TraceSet(b, x, [layer]).get("gradient", [layer])
    a = trace.activation(layer)[0].double()
    v = predictor.fc.weight[0].detach().double()
    pooled = a.mean(dim=(1, 2))
    z = float(v @ pooled.relu() + predictor.fc.bias.detach().double())
    s = 1 / (1 + math.exp(-z))
    assert r.difficulty.score == pytest.approx(s, rel=1e-5)
    grad = s * (1 - s) * (v * (pooled > 0))[:, None, None] / (a.shape[1] * a.shape[2])
    expected = (a * grad.clamp(min=0)).sum(dim=0)
    torch.testing.assert_close(r.difficulty.map.double(), expected, rtol=1e-4, atol=1e-10)


# ---------------------------------------------------------------------------- pairs and segments


MAPS = torch.tensor([[[3.0, 0.0, 1.0]],
                     [[2.0, 1.0, 0.0]],
                     [[1.0, 2.0, -1.0]]])  # (R=3, h=1, w=3)
DIFFICULTY = torch.tensor([[1.0, 2.0, 4.0]])


def test_pair_set_from_per_cell_top_k() -> None:
    # cell 0: ranks 0, 1 strongest -> (0, 1); cell 1: 2, 1 -> (1, 2); cell 2: 0, then a tie
    # of 0 and -1 -> rank 1 (0.0), which has no positive evidence: counted only by the original
    assert ambiguity.pair_set(MAPS, per_cell=2) == {(0, 1): 1, (1, 2): 1}
    assert ambiguity.pair_set(MAPS, per_cell=2, require_positive=False) == \
        {(0, 1): 2, (1, 2): 1}
    assert ambiguity.pair_set(MAPS, per_cell=3) == {(0, 1): 1, (0, 2): 1, (1, 2): 2}
    assert ambiguity.pair_set(MAPS, per_cell=3, require_positive=False) == \
        {(0, 1): 3, (0, 2): 3, (1, 2): 3}


def test_triple_product_normalised_and_original() -> None:
    top = [(10, "ten", 0.5), (20, "twenty", 0.3), (30, "thirty", 0.2)]
    pairs = {p.ranks: p for p in rank_pairs(MAPS, DIFFICULTY, top, True, 2)}
    # normalised: â_0 = [1, 0, 1/3], â_1 = [1, 1/2, 0], â_2 = [1/2, 1, 0], d̂ = [1/4, 1/2, 1]
    torch.testing.assert_close(pairs[(0, 1)].map.double(),
                               torch.tensor([[0.25, 0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(pairs[(1, 2)].map.double(),
                               torch.tensor([[0.125, 0.25, 0.0]], dtype=torch.float64))
    assert pairs[(1, 2)].mass == pytest.approx(0.375 / 3)
    assert pairs[(1, 2)].score == pytest.approx(0.375 / 3 * math.sqrt(0.3 * 0.2))
    assert pairs[(0, 1)].score == pytest.approx(0.25 / 3 * math.sqrt(0.5 * 0.3))
    assert (pairs[(0, 1)].a, pairs[(0, 1)].b, pairs[(0, 1)].names) == (10, 20, ("ten", "twenty"))
    ranked = rank_pairs(MAPS, DIFFICULTY, top, True, 2)
    assert [p.ranks for p in ranked] == [(0, 1), (1, 2)]  # 0.0323 > 0.0306
    # the original: raw maps, negatives (and zeros) -> 1e-7, every cell counts
    original = {p.ranks: p for p in rank_pairs(MAPS, DIFFICULTY, top, False, 2)}
    torch.testing.assert_close(original[(0, 1)].map.double(), torch.tensor(
        [[3.0 * 2.0 * 1.0, 1e-7 * 1.0 * 2.0, 1.0 * 1e-7 * 4.0]], dtype=torch.float64))
    assert original[(0, 1)].cells == 2


def test_normalisation_removes_the_logit_scale() -> None:
    scaled = MAPS.clone()
    scaled[0] *= 1000.0  # a class with a larger logit scale
    top = [(0, "a", 0.4), (1, "b", 0.3), (2, "c", 0.3)]
    same = rank_pairs(scaled, DIFFICULTY, top, True, 3)
    base = rank_pairs(MAPS, DIFFICULTY, top, True, 3)
    assert [p.ranks for p in same] == [p.ranks for p in base]
    assert [p.score for p in same] == pytest.approx([p.score for p in base])
    raw = rank_pairs(scaled, DIFFICULTY, top, False, 3)
    assert all(0 in p.ranks for p in raw[:2])  # the original: the scaled class dominates


def test_top_fraction_keeps_exactly_the_largest_pixels() -> None:
    values = torch.arange(16.0).view(4, 4)
    mask = ambiguity.top_fraction(values, 0.25)
    assert mask.sum() == 4 and bool(mask[3].all())
    assert ambiguity.top_fraction(values, 1.0).all()
    assert ambiguity.top_fraction(values, 1e-6).sum() == 1  # at least one pixel
    ties = torch.zeros(2, 2)
    assert ambiguity.top_fraction(ties, 0.5).tolist() == [[True, True], [False, False]]


def test_segment_is_at_the_input_resolution_and_follows_the_map(flat) -> None:
    b, _, _, x = flat
    r = dl.insecurities(b, x, top_classes=3)
    pair = r.pairs[0]
    segment = r.segment(pair, area=0.25)
    assert segment.mask.shape == (4, 4) and segment.pixels == 4
    values = segment.values
    assert float(values[segment.mask].min()) >= float(values[~segment.mask].max())
    assert r.segment((pair.b, pair.a), 0.25).mask.equal(segment.mask)
    assert r.segment(pair.label, 0.25).mask.equal(segment.mask)
