"""The speed engine's promises, counted: one forward per rule, every gradient computed once,
a backward only as deep as asked, starting from a cached cut, none on a GAP head."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_models import Block, FunctionalNet, bundle
from torch import nn

from xai_widgets.trace import INPUT, Trace, TraceSet


class _Count(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, probe: Probe) -> torch.Tensor:
        ctx.probe = probe
        probe.forwards += 1
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        ctx.probe.backwards += 1
        return grad, None


class Probe(nn.Module):
    """Identity that counts how often the forward and the backward pass cross it."""

    def __init__(self) -> None:
        super().__init__()
        self.forwards = 0
        self.backwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Count.apply(x, self)


class ProbedNet(nn.Module):
    """stem -> block1 -> block2 -> GAP -> probe -> fc, with probes after the stem and in
    block2's side branch; blocks are residual (so a conv inside a block is not a cut)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), Probe())
        self.block1 = Block(8)
        self.block2 = Block(8)
        self.head_probe = Probe()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(self.head_probe(x.mean(dim=(2, 3))))


@pytest.fixture
def net() -> ProbedNet:
    return ProbedNet().eval()


def fresh_gradients(model: nn.Module, x: torch.Tensor, targets: tuple[int, ...],
                    layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain autograd, no cache: gradient at ``layer`` and at the input."""
    store: dict[str, torch.Tensor] = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _a, out: store.setdefault("a", out))
    x = x.clone().requires_grad_()
    logits = model(x)
    handle.remove()
    score = logits[torch.arange(len(targets)), torch.tensor(targets)].sum()
    ga, gx = torch.autograd.grad(score, [store["a"], x])
    return ga, gx


def test_one_forward_and_one_backward_per_question(net: ProbedNet) -> None:
    x = torch.randn(2, 3, 8, 8)
    traces = TraceSet(bundle(net, size=8), x, ["block2.conv1"])
    trace = traces.get("gradient")
    trace.gradient((1, 2), "block2.conv1")
    trace.gradient((1, 2), "block2.conv1")
    trace.gradients((1, 2), ["block2.conv1", "block2.conv1"])
    assert net.head_probe.backwards == 1
    assert traces.get("gradient") is trace and traces.forward_passes == 1
    assert net.head_probe.forwards == 2  # the layer catalogue's dry run + the trace
    trace.gradient((0, 3), "block2.conv1")  # a class switch: one more backward, no forward
    assert net.head_probe.backwards == 2
    assert net.head_probe.forwards == 2


def test_input_gradient_continues_from_a_cached_cut(net: ProbedNet) -> None:
    x = torch.randn(2, 3, 8, 8)
    trace = TraceSet(bundle(net, size=8), x, ["block1"]).get("gradient")
    layer_grad = trace.gradient((1, 2), "block1")
    backwards = net.head_probe.backwards
    input_grad = trace.gradient((1, 2), INPUT)
    assert net.head_probe.backwards == backwards  # started at block1, not at the logits
    assert net.stem[2].backwards == 1
    ga, gx = fresh_gradients(net, x, (1, 2), "block1")
    torch.testing.assert_close(layer_grad, ga)
    torch.testing.assert_close(input_grad, gx)


def test_layers_crossed_on_the_way_are_cached(net: ProbedNet) -> None:
    x = torch.randn(2, 3, 8, 8)
    trace = TraceSet(bundle(net, size=8), x).get("gradient")
    trace.gradient((1, 2), "stem")  # crosses block2 and block1 on the way
    backwards = (net.head_probe.backwards, net.stem[2].backwards)
    g_block1 = trace.gradient((1, 2), "block1")
    assert (net.head_probe.backwards, net.stem[2].backwards) == backwards
    torch.testing.assert_close(g_block1, fresh_gradients(net, x, (1, 2), "block1")[0])


def test_a_layer_inside_a_residual_block_is_not_used_as_a_cut(net: ProbedNet) -> None:
    x = torch.randn(2, 3, 8, 8)
    trace = TraceSet(bundle(net, size=8), x, ["block1.conv1"]).get("gradient")
    trace.gradient((3, 0), "block1.conv1")
    input_grad = trace.gradient((3, 0), INPUT)  # the skip path bypasses block1.conv1
    ga, gx = fresh_gradients(net, x, (3, 0), "block1.conv1")
    torch.testing.assert_close(trace.gradient((3, 0), "block1.conv1"), ga)
    torch.testing.assert_close(input_grad, gx)


def test_gap_head_gradient_needs_no_backward(net: ProbedNet) -> None:
    x = torch.randn(2, 3, 8, 8)
    trace = TraceSet(bundle(net, size=8), x).get("gradient")
    head = trace.head()
    assert head is not None and head.layer == "block2" and not head.rectified
    g = trace.gradient((1, 2), "block2")
    assert net.head_probe.backwards == 0
    torch.testing.assert_close(g, fresh_gradients(net, x, (1, 2), "block2")[0])


def test_output_changed_in_place_later_is_copied() -> None:
    model = FunctionalNet().eval()  # features ends in BatchNorm, then F.relu(inplace=True)
    b = bundle(model)
    info = b.layers["features"]
    assert info.mutated_later
    x = torch.randn(2, 3, 16, 16)
    trace = TraceSet(b, x, ["features"]).get("gradient")
    activation = trace.activation("features")
    assert float(activation.min()) < 0  # the BatchNorm output, not the ReLU's
    with torch.no_grad():
        torch.testing.assert_close(activation, model.features(x))
    head = trace.head()
    assert head is not None and head.rectified
    expected = model.classifier.weight[[0, 4]][:, :, None, None] / 64 * (activation > 0)
    torch.testing.assert_close(trace.gradient((0, 4), "features"), expected)


def test_graphless_trace_refuses_gradients() -> None:
    trace = Trace(bundle(FunctionalNet()), torch.randn(1, 3, 16, 16), with_graph=False)
    with pytest.raises(RuntimeError, match="without a graph"):
        trace.gradient((0,), INPUT)


def test_input_tensor_is_not_the_users(net: ProbedNet) -> None:
    x = torch.randn(1, 3, 8, 8)
    trace = TraceSet(bundle(net, size=8), x).get("gradient")
    assert trace.input is not x and not x.requires_grad
    trace.gradient((0,), INPUT)
    assert x.grad is None
