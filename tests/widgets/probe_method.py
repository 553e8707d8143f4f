"""A test method whose parameters cover every control type and whose calls are counted."""

from __future__ import annotations

import time

import torch

import xai_widgets as xw
from xai_widgets.kernels.spec import KernelContext, KernelResult, MethodSpec, Param

CALLS: list[dict[str, object]] = []


def _probe(ctx: KernelContext) -> KernelResult:
    """A map that encodes its parameters: constant ``scale`` (or its negative when ``flip``),
    with ``mode`` 'ramp' adding a horizontal ramp; ``steps`` progress reports."""
    CALLS.append(dict(ctx.params))
    n = len(ctx.targets)
    for step in range(int(ctx.params["steps"])):
        time.sleep(float(ctx.params["pause"]))
        ctx.report((step + 1) / ctx.params["steps"])
    values = torch.full((n, 4, 4), float(ctx.params["scale"]))
    if ctx.params["mode"] == "ramp":
        values = values + torch.arange(4.0)
    return KernelResult(-values if ctx.params["flip"] else values)


def probe_spec(cost: str = "pass") -> MethodSpec:
    return MethodSpec(
        name=f"probe_{cost}", label=f"Probe ({cost})", family="gradient", layer_policy="none",
        cost=cost, paper="none", rules=("gradient",), compute=_probe,  # type: ignore[arg-type]
        display=xw.RenderSettings(), summary="test method",
        params=(Param("scale", 1.0, float, "value", low=0.0, high=10.0),
                Param("steps", 0, int, "reports", low=0, high=50),
                Param("flip", False, bool, "negate"),
                Param("mode", "flat", str, "shape", choices=("flat", "ramp")),
                Param("pause", 0.0, float, "sleep per step", low=0.0, high=1.0)))
