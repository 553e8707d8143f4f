"""Method parameters at the boundary: numbers too large for a float are refused clearly."""

from __future__ import annotations

import re

import pytest
import torch
from tiny_models import ARCHITECTURES, bundle

import xai_widgets as xw
from xai_widgets.kernels import REGISTRY

NUMERIC = [(spec.name, param) for spec in REGISTRY.values() for param in spec.params
           if param.kind in (int, float) and not param.tensor]


@pytest.mark.parametrize(("method", "param"), NUMERIC,
                         ids=[f"{m}.{p.name}" for m, p in NUMERIC])
def test_huge_integers_are_refused_with_the_range(method: str, param) -> None:
    for value in (10**400, -(10**400), 10**5000, 2**64 + 1):
        with pytest.raises(xw.ParameterError, match=rf"'{param.name}' must lie in") as error:
            param.validate(value, method)
        assert len(str(error.value)) < 300  # the message does not spell out 400 digits


def test_explain_refuses_a_huge_step_count_before_any_work() -> None:
    b = bundle(ARCHITECTURES["plain"]().eval())
    with pytest.raises(xw.ParameterError, match="'n_steps' must lie in"):
        xw.explain(b, torch.randn(1, 3, 16, 16), "integrated_gradients", n_steps=10**400)
    with pytest.raises(xw.ParameterError, match="'noise_level' must lie in"):
        xw.explain(b, torch.randn(1, 3, 16, 16), "smoothgrad", noise_level=10**400)


# ------------------------------------------------ chunk sizes larger than memory allows

#: the iterative methods with a chunk_size, and settings that give them 16+ passes per image
ITERATIVE = {"integrated_gradients": {"n_steps": 16}, "smoothgrad": {"n_samples": 16},
             "rise": {"n_masks": 16}, "score_cam": {}}


class RunsOutOfMemory(torch.nn.Module):
    """A small convnet (8 channels) whose forward fails as an allocator does on more than
    4 inputs."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > 4:
            raise self.error
        return self.fc(self.conv(x).relu().mean(dim=(2, 3)))


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                 "allocate memory: you tried to allocate 4000000000000 bytes."),
], ids=["cuda", "cpu"])
@pytest.mark.parametrize("method", list(ITERATIVE))
def test_an_allocator_error_asks_for_a_smaller_chunk(method: str, error: Exception) -> None:
    b = bundle(RunsOutOfMemory(error).eval())
    x = torch.randn(1, 3, 16, 16)
    expected = rf"{method}: a pass over 8 inputs ran out of memory on cpu; use a smaller " \
        r"chunk_size, e\.g\. 2"
    with pytest.raises(xw.ParameterError, match=expected):
        xw.explain(b, x, method, chunk_size=8, **ITERATIVE[method])
    fits = xw.explain(b, x, method, chunk_size=2, **ITERATIVE[method])
    assert fits.map.isfinite().all()


@pytest.mark.parametrize("method", list(ITERATIVE))
def test_a_chunk_whose_inputs_cannot_fit_is_refused_before_the_first_pass(
        method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from xai_widgets.kernels import _iterative

    b = bundle(ARCHITECTURES["plain"]().eval())
    x = torch.randn(1, 3, 16, 16)
    small = xw.explain(b, x, method, chunk_size=1, **ITERATIVE[method])
    monkeypatch.setattr(_iterative, "available_memory", lambda _device: 20_000)  # 20 kB
    passes: list[int] = []
    b.model.register_forward_pre_hook(lambda _m, args: passes.append(len(args[0])))
    with pytest.raises(xw.ParameterError, match=r"chunk_size=64 needs at least .* kB on cpu "
                                                r"\(.* per input\), more than the 20 kB "
                                                r"available; use chunk_size=(\d+) or less"
                       ) as error:
        xw.explain(b, x, method, chunk_size=64, **ITERATIVE[method])
    assert max(passes) == 1  # the batch's own forward; no chunk ran
    fits = int(re.search(r"use chunk_size=(\d+)", str(error.value)).group(1))  # type: ignore[union-attr]
    again = xw.explain(b, x, method, chunk_size=fits, **ITERATIVE[method])
    torch.testing.assert_close(again.map, small.map)


# ------------------------------------------------ layer-valued parameters in the Explorer

class Nested(torch.nn.Module):
    """Blocks two levels deep (main layers) around layers three levels deep (not main)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()),
            torch.nn.Conv2d(4, 6, 3, stride=2, padding=1))
        self.fc = torch.nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


def test_a_layer_parameter_offers_the_models_layers_and_reaches_the_kernel() -> None:
    from xai_widgets.request import Request
    from xai_widgets.widgets.controls import parameter_controls

    spec = REGISTRY["feature_inversion"]
    assert parameter_controls(spec)["mask_layer"].options == ("same",)  # no model: no layers
    b = bundle(Nested().eval())
    controls = parameter_controls(spec, layers=b.layers)
    menu = controls["mask_layer"]
    assert menu.value == "same"
    assert [value for _, value in menu.options] == [  # main blocks first
        "same", "body.0", "body", "body.0.0"]  # (body.0.1 and body.1 are aliases)
    assert ("body.0  4×16×16", "body.0") in menu.options  # with the shape: the mask's grid
    menu.value = "body.0"
    params = {name: control.value for name, control in controls.items()}
    request = Request.make(b, torch.rand(1, 3, 16, 16), spec, layer="body",
                           params={**params, "iterations": 2, "step1_iterations": 1})
    assert request.params["mask_layer"] == "body.0"
    explanation = request.run()
    assert explanation.extras["mask_layer"] == "body.0"
    assert explanation.extras["layer_mask"].shape[-2:] == (16, 16)  # body.0's grid, not body's
