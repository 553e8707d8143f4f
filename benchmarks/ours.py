"""Our methods as the benchmarks call them: one-shot through the public ``explain``, and
switches on a warm :class:`~xai_widgets.trace.TraceSet` through the kernels themselves (what
the Explorer does when a person changes the class, the layer or the method)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import xai_widgets as xw
from xai_widgets.images import PreparedBatch
from xai_widgets.request import Request
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


def one_shot(work: Workload, method: str, bare: bool = False) -> Callable[[], xw.Explanation]:
    """``explain(bundle, inputs, method, target)``: a fresh trace every call; ``bare``: the
    bare ``nn.Module`` instead of its bundle (how captum users call it)."""
    targets = list(work.targets)
    model = work.model if bare else work.bundle
    return lambda: xw.explain(model, work.inputs, method=method, target=targets)


@functools.lru_cache(maxsize=8)
def _batch(traces: TraceSet) -> PreparedBatch:
    return traces.bundle.prepare(traces.inputs)


def kernel(traces: TraceSet, method: str, targets: Sequence[int],
           layer: str | None = None) -> xw.Explanation:
    """Run ``method`` on existing traces (what a switch costs) through the one request path:
    no new forward unless the method needs a rule or a layer the traces have not recorded."""
    where = layer if xw.get_method(method).takes_layer else None
    return Request.make(traces.bundle, None, method, list(targets), where, batch=_batch(traces),
                        traces=traces).run()
