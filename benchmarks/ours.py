"""Our methods as the benchmarks call them: one-shot through the public ``explain``, and
switches on a warm :class:`~xai_widgets.trace.TraceSet` through the kernels themselves (what
the Explorer does when a person changes the class, the layer or the method)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import xai_widgets as xw
from xai_widgets.kernels import KernelContext, KernelResult, get_method
from xai_widgets.trace import TraceSet

from .floors import F_GRAD, FB, F
from .workload import Workload

OURS = "xai-widgets"


#: The methods of the core engine (issue 2) and their floors: the passes each cannot avoid
#: (``+``: the sum of two floors). Methods added later have benchmarks of their own.
FLOORS = {
    "cam": F,
    "grad_cam": F_GRAD,
    "grad_cam_pp": F_GRAD,
    "layer_cam": F_GRAD,
    "saliency": FB,
    "input_x_gradient": FB,
    "guided_backprop": FB,
    "deconvnet": FB,
    # Grad-CAM's plain gradient at the layer and guided backprop's backward to the input
    "guided_grad_cam": FB + "+" + F_GRAD,
}


def one_shot(work: Workload, method: str) -> Callable[[], xw.Explanation]:
    """``explain(bundle, inputs, method, target)``: a fresh trace every call."""
    targets = list(work.targets)
    return lambda: xw.explain(work.bundle, work.inputs, method=method, target=targets)


def kernel(traces: TraceSet, method: str, targets: Sequence[int],
           layer: str | None = None) -> KernelResult:
    """Run ``method`` on existing traces (what a switch costs): no new forward unless the
    method needs a rule or a layer the traces have not recorded."""
    spec = get_method(method)
    return spec.compute(KernelContext(traces, tuple(targets), layer if spec.needs_layer else None,
                                      spec.validate({})))
