"""Gradient–Hessian attribution ("2ndG" of deliberative explanations, Wang & Vasconcelos 2019).

For a scalar score ``s`` of the network's output and the activations ``A ∈ R^{K×h×w}`` of a
layer, with ``a_ij ∈ R^K`` the channel vector of cell ``(i, j)``:

    d(i, j) = Σ_k A_k(i, j) [∂s/∂A_k(i, j)]_+  +  ½ |a_ijᵀ H_ij a_ij|,
    H_ij = ∂²s / ∂a_ij ∂a_ijᵀ        (the K×K diagonal spatial block of the Hessian)

Shape ``(N, h, w)``, ≥ 0 by definition (the positive part and the absolute value belong to the
method); ``extras["first_order"]``, ``extras["second_order"]`` (the two terms) and
``extras["score"]`` (``s`` per image) come with it.

Which scalar (``score``), for the target class ``c`` with logit ``z_c``:

* ``"sigmoid"`` (default): ``s = σ(z_c)``, the form the deliberative project explains (the
  sigmoid output of its hardness predictor), here the one-vs-rest probability of the class;
* ``"probability"``: ``s = softmax(z)_c``;
* ``"logit"``: ``s = z_c`` (the second-order term is then 0 where the network above the layer
  is piecewise linear: the first term alone is the project's "gradient" attribution).

Exact and fast (no per-cell autograd loop). Where everything between the
layer and the logits is piecewise linear (ReLU/ReLU6, max/avg pooling, linear, convolution,
batch norm in eval mode, dropout, residual additions, reshapes; checked on the recorded
autograd graph), ``z = J A`` locally, so with ``v_ij = J_ij a_ij`` (``v_ij[c'] = Σ_k
A_k(i,j) ∂z_c'/∂A_k(i,j)``):

    sigmoid:     a_ijᵀ H_ij a_ij = σ''(z_c) · v_ij[c]²,   σ'' = σ(1−σ)(1−2σ)
    probability: a_ijᵀ H_ij a_ij = p_c [(v_ij[c] − p·v_ij)² − Σ_c' p_c' v_ij[c']² + (p·v_ij)²]

``sigmoid`` and ``logit`` need only ``∂z_c/∂A`` (the trace's cached gradient: one backward at
most, none on a global-average-pooling head at its pooled layer). ``probability`` needs
``v_ij`` for every class, known in closed form at the pooled layer of a GAP + linear head.
Elsewhere (a smooth activation or a product above the layer, or ``probability`` away from
the pooled layer) the diagonal blocks are computed exactly by batched Hessian-vector
products (double backward, batched over ``chunk_size`` cells at a time):
``extras["closed_form"]`` says which way was taken.

Wang, Vasconcelos. "Deliberative Explanations: visualizing network insecurities." NeurIPS
2019. arXiv:1910.13888.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.graph import get_gradient_edge

from ..autograd_graph import batched_grad
from ..render import RenderSettings
from ..trace import Trace
from ._iterative import chunks
from .spec import KernelContext, KernelResult, MethodSpec, Param

NAME = "gradient_hessian"
SCORES = ("sigmoid", "probability", "logit")

#: autograd nodes of functions that are piecewise linear in their (only differentiable) input
_PIECEWISE_LINEAR = frozenset({
    "Addmm", "Mm", "Mv", "Bmm", "Linear", "Add", "Sub", "Rsub", "Neg", "Sum", "Mean",
    "Convolution", "MkldnnConvolution", "CudnnConvolution", "SlowConv2D", "ConvDepthwise2D",
    "NativeBatchNorm", "CudnnBatchNorm", "MiopenBatchNorm", "NativeBatchNormLegit",
    "View", "UnsafeView", "Reshape", "ReshapeAlias", "T", "Transpose", "Permute", "Expand",
    "Squeeze", "Unsqueeze", "Clone", "Cat", "Stack", "Slice", "Select", "Index", "Split",
    "SplitWithSizes", "Unbind", "AsStrided", "Alias", "ToCopy", "ConstantPadNd",
    "ReflectionPad2D", "ReplicationPad2D", "AvgPool2D", "AvgPool1D", "AvgPool3D",
    "AdaptiveAvgPool2D", "AdaptiveAvgPool1D", "AdaptiveAvgPool3D", "UpsampleNearest2D",
    "UpsampleBilinear2D", "Relu", "Threshold", "Hardtanh", "LeakyRelu", "Clamp", "ClampMin",
    "ClampMax", "Abs", "MaxPool2DWithIndices", "MaxPool3DWithIndices", "AdaptiveMaxPool2D",
    "Max", "Amax", "Min", "Amin", "Maximum", "Minimum", "Where",
})
#: products and quotients: piecewise linear only if one factor (the numerator) depends on A
_PRODUCTS = frozenset({"Mul", "Div"})


def compute(ctx: KernelContext) -> KernelResult:
    assert ctx.layer is not None, "the registry gives layer methods a layer"
    trace = ctx.traces.get("gradient", [ctx.layer])
    activation = trace.activation(ctx.layer).double()
    index = ctx.target_index
    rows = torch.arange(len(index), device=index.device)
    logits = trace.logits.detach().double()
    z = logits[rows, index]
    how = ctx.params["score"]
    g = trace.gradient(ctx.targets, ctx.layer).double()  # ∂z_c/∂A
    linear_above = piecewise_linear(trace.logits, trace.tensor(ctx.layer))
    p = logits.softmax(dim=1)
    extras: dict[str, Any] = {}
    if how == "logit":
        score, grad_s = z, g
    elif how == "sigmoid":
        sig = torch.sigmoid(z)
        score, grad_s = sig, (sig * (1 - sig)).view(-1, 1, 1, 1) * g
    else:
        score = p[rows, index]
        mixed = _expected_gradient(trace, ctx, p).double()  # Σ_c' p_c' ∂z_c'/∂A
        grad_s = score.view(-1, 1, 1, 1) * (g - mixed)
    first = (activation * grad_s.clamp(min=0)).sum(dim=1)
    quadratic = _closed_form(trace, ctx, how, activation, g, z, p) if linear_above else None
    extras["closed_form"] = quadratic is not None
    if quadratic is None:
        quadratic = _hessian_blocks(trace, ctx, how)
    second = 0.5 * quadratic.abs()
    extras.update(first_order=first.float(), second_order=second.float(), score=score.float())
    return KernelResult((first + second).float(), extras)


def _expected_gradient(trace: Trace, ctx: KernelContext, p: torch.Tensor) -> torch.Tensor:
    """``Σ_c' p_c' ∂z_c'/∂A`` (p held constant): closed form on a GAP head, else one backward."""
    assert ctx.layer is not None
    head = trace.head()
    activation = trace.activation(ctx.layer)
    if head is not None and head.layer == ctx.layer and head.weight is not None:
        n, k, h, w = activation.shape
        rows = (p.to(head.weight.dtype) @ head.weight).to(activation.dtype)
        grad = (rows / (h * w))[:, :, None, None].expand(n, k, h, w)
        return grad * (activation > 0) if head.rectified else grad
    (grad,) = torch.autograd.grad(trace.logits, trace.tensor(ctx.layer),
                                  p.to(trace.logits.dtype), retain_graph=True)
    return grad


def _closed_form(trace: Trace, ctx: KernelContext, how: str, activation: torch.Tensor,
                 g: torch.Tensor, z: torch.Tensor, p: torch.Tensor) -> torch.Tensor | None:
    """``a_ijᵀ H_ij a_ij`` per cell ``(N, h, w)`` where the network above is piecewise linear;
    ``None`` when it needs the per-class map and no GAP head gives it in closed form."""
    if how == "logit":
        return torch.zeros_like(activation[:, 0])
    if how == "sigmoid":
        sig = torch.sigmoid(z)
        second = sig * (1 - sig) * (1 - 2 * sig)
        v = (g * activation).sum(dim=1)
        return second.view(-1, 1, 1) * v * v
    head = trace.head()
    if head is None or head.layer != ctx.layer:
        return None
    n, _k, h, w = activation.shape
    features = activation.clamp(min=0) if head.rectified else activation  # φ'(A) A
    if head.weight is None:
        v = features / (h * w)  # one map per class
    else:
        v = torch.einsum("ck,nkhw->nchw", head.weight.double(), features) / (h * w)
    index = ctx.target_index
    pc = p[torch.arange(n), index]
    pv = torch.einsum("nc,nchw->nhw", p, v)
    second_moment = torch.einsum("nc,nchw->nhw", p, v * v)
    vc = v[torch.arange(n), index]
    return pc.view(-1, 1, 1) * ((vc - pv) ** 2 - second_moment + pv ** 2)


def _hessian_blocks(trace: Trace, ctx: KernelContext, how: str) -> torch.Tensor:
    """``a_ijᵀ H_ij a_ij`` per cell, exactly, by batched Hessian-vector products."""
    assert ctx.layer is not None
    tensor = trace.tensor(ctx.layer)
    activation = tensor.detach()
    n, _k, h, w = activation.shape
    index = ctx.target_index
    rows = torch.arange(n, device=index.device)
    chunk_size = int(ctx.params["chunk_size"])
    with torch.enable_grad():
        logits = trace.logits
        if how == "sigmoid":
            score = torch.sigmoid(logits[rows, index])
        elif how == "probability":
            score = logits.softmax(dim=1)[rows, index]
        else:
            score = logits[rows, index]
        (grad,) = torch.autograd.grad(score.sum(), tensor, create_graph=True)
        out = torch.zeros(n, h * w, dtype=torch.float64, device=activation.device)
        cells = h * w
        for first, stop in chunks(cells, chunk_size):
            cell = torch.arange(first, stop, device=activation.device)
            mask = torch.zeros(len(cell), 1, 1, h * w, dtype=activation.dtype,
                               device=activation.device)
            mask[torch.arange(len(cell)), 0, 0, cell] = 1.0
            directions = activation[None] * mask.view(len(cell), 1, 1, h, w)
            hv = batched_grad([grad], tensor, [directions], retain_graph=True)
            out[:, first:stop] = (hv * directions).sum(dim=(2, 3, 4)).T.double()
            ctx.report(stop / cells)
        del grad
    return out.view(n, h, w)


def piecewise_linear(root: torch.Tensor, tensor: torch.Tensor) -> bool:
    """Whether every autograd node between ``tensor`` and ``root`` is piecewise linear in
    ``tensor`` (so the Hessian of any function of ``root`` is that function's curvature only)."""
    target = get_gradient_edge(tensor).node
    reaches: dict[Any, bool] = {target: True}
    stack: list[tuple[Any, bool]] = [(root.grad_fn, False)]
    while stack:  # iterative post-order: does a node reach the target?
        node, expanded = stack.pop()
        if node in reaches:
            continue
        children = [c for c, _ in node.next_functions if c is not None]
        if not expanded:
            stack.append((node, True))
            stack.extend((c, False) for c in children if c not in reaches)
            continue
        reaches[node] = any(reaches.get(c, False) for c in children)
    for node, reaching in reaches.items():
        if not reaching or node is target:
            continue
        kind = type(node).__name__.rstrip("0123456789").removesuffix("Backward")
        if kind in _PRODUCTS:
            depends = [c is not None and reaches.get(c, False) for c, _ in node.next_functions]
            if sum(depends) > 1 or (kind == "Div" and len(depends) > 1 and depends[1]):
                return False
        elif kind not in _PIECEWISE_LINEAR:
            return False
    return True


SPEC = MethodSpec(
    name=NAME,
    label="Gradient–Hessian (2ndG)",
    family="gradient",
    layer_policy="required",
    cost="pass",
    paper="Wang, Vasconcelos. Deliberative Explanations: visualizing network insecurities. "
          "NeurIPS 2019",
    rules=("gradient",),
    compute=compute,
    display=RenderSettings(polarity="positive"),
    params=(
        Param("score", "sigmoid", str, "the scalar explained: σ(logit) of the class (as the "
              "deliberative project), its softmax probability, or the logit", choices=SCORES),
        Param("chunk_size", 64, int, "cells per batched Hessian-vector product when no "
              "closed form applies", low=1, high=100_000),
    ),
    reuses_graph=True,
    summary="Activation times positive gradient plus the second-order (Hessian) term of "
            "the class score, per cell of a layer.",
)
