"""The batched backward of the insecurity maps (``torch.func.vmap`` over the trace's graph)
equals one backward per row: class and difficulty rows at a layer below residual blocks with
BatchNorm and in-place ReLUs, and the Hessian-vector products of ``gradient_hessian``."""

from __future__ import annotations

import pytest
import torch
from tiny_models import InplaceResNet, bundle, randomise_batchnorm

from xai_widgets import deliberative as dl
from xai_widgets.deliberative import maps


@pytest.fixture
def analysis() -> dl.Analysis:
    torch.manual_seed(0)
    b = bundle(randomise_batchnorm(InplaceResNet(6).eval()), 16, classes=6)
    # layer1: every row goes back through layer2 (convolutions, BatchNorm, a residual sum)
    return dl.Analysis(b, torch.randn(2, 3, 16, 16), layer="layer1", top_classes=4)


def test_class_and_difficulty_rows_equal_one_backward_per_row(analysis: dl.Analysis) -> None:
    layer = analysis.layer
    trace = analysis.traces.get("gradient", [layer])
    assert trace.head() is None or trace.head().layer != layer  # a real backward, no closed form
    spec = analysis.spec("entropy")
    rows = maps.batched_gradients(trace, layer, analysis.classes, spec)
    assert rows.classes is not None and rows.difficulty is not None
    tensor, logits = trace.tensor(layer), trace.logits
    for rank in range(analysis.top_classes):
        seed = torch.zeros_like(logits)
        seed[torch.arange(2), analysis.classes[:, rank]] = 1.0
        (expected,) = torch.autograd.grad(logits, tensor, seed, retain_graph=True)
        torch.testing.assert_close(rows.classes[rank], expected, rtol=1e-5, atol=1e-7)
    leaf = logits.detach().double().requires_grad_(True)
    (seed,) = torch.autograd.grad(spec.score_from_logits(leaf).sum(), leaf)
    (expected,) = torch.autograd.grad(logits, tensor, seed.float(), retain_graph=True)
    torch.testing.assert_close(rows.difficulty, expected, rtol=1e-5, atol=1e-7)
    assert float(expected.abs().max()) > 0


def test_hessian_blocks_equal_one_product_per_cell(analysis: dl.Analysis) -> None:
    layer = analysis.layer
    trace = analysis.traces.get("gradient", [layer])
    spec = analysis.spec("entropy")
    blocks = maps._hessian_blocks(trace, layer, spec, chunk_size=5)
    tensor = trace.tensor(layer)
    activation = tensor.detach()
    n, _k, h, w = activation.shape
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(spec.score_from_logits(trace.logits).sum(), tensor,
                                      create_graph=True)
    expected = torch.zeros(n, h, w)
    for i in range(h):
        for j in range(w):
            direction = torch.zeros_like(activation)
            direction[..., i, j] = activation[..., i, j]
            (hv,) = torch.autograd.grad(grad, tensor, direction, retain_graph=True)
            expected[:, i, j] = (hv * direction).sum(dim=(1, 2, 3))
    torch.testing.assert_close(blocks, expected, rtol=1e-4, atol=1e-9)
    assert float(expected.abs().max()) > 0
