"""Attribution maps at a layer for the top classes and the difficulty score, batched.

With ``A ∈ R^{K×h×w}`` the activations of the layer and ``a_ij`` the channel vector of cell
``(i, j)`` (Wang & Vasconcelos, NeurIPS 2019, §3 and their code):

* class map (``gradient``):  ``a_c(i, j) = Σ_k A_k(i, j) ∂z_c/∂A_k(i, j)`` (per cell: no
  spatial pooling of the gradient, unlike Grad-CAM); raw and signed;
* difficulty map (``gradient``): ``d(i, j) = Σ_k A_k(i, j) [∂s/∂A_k(i, j)]_+``;
* ``integrated_gradients``: ``IG_k = (A(x) − A(x'))_k · Σ_t w_t ∂(·)/∂A_k(x' + α_t (x − x'))``
  (black baseline, straight path in input space, gradients at the layer, right Riemann sum:
  the ``layer_integrated_gradients`` method with ``path="input"``), summed over channels for
  the classes (``Σ_k IG_k``, signed) and, as the original, over the positive channel terms for
  the difficulty (``Σ_k [IG_k]_+``: from the black baseline, where the network is maximally
  unsure, the signed total of a difficulty score is mostly negative);
* ``gradient_hessian`` (difficulty only; the class maps are the ``gradient`` ones):
  ``d(i, j) = Σ_k A_k [∂s/∂A_k]_+ + ½ |a_ijᵀ H_ij a_ij|``. For a hardness predictor
  ``s = σ(z)`` with a piecewise-linear path from the layer to ``z`` the quadratic form is
  ``σ''(z) (Σ_k A_k ∂z/∂A_k)²`` (closed form, see ``kernels/gradient_hessian.py``), 0 for
  ``s = z``; otherwise (``cs``, ``entropy``, a smooth predictor) the diagonal blocks come
  exactly from batched Hessian-vector products on the same graph.

Speed: the rows of all top classes and of the difficulty go through **one** backward, batched
over the rows (``torch.func.vmap`` over ``torch.autograd.grad`` on the trace's graph: each
convolution's input gradient runs once on a batch of rows), not a loop over classes; the
Hessian-vector products of ``gradient_hessian`` are batched the same way, per chunk of cells.
On a global-average-pooling + linear head at its pooled layer the rows are known in closed
form (``∂(uᵀz)/∂A = uᵀW / (h w)``), so no backward runs at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..autograd_graph import batched_grad
from ..kernels._iterative import baseline, chunks, quadrature
from ..kernels.gradient_hessian import piecewise_linear
from ..models import ModelBundle
from ..scope import eval_mode, model_lock
from ..trace import Trace
from .scores import DifficultySpec

ATTRIBUTIONS = ("gradient", "integrated_gradients", "gradient_hessian")


@dataclass
class Rows:
    """What one batched backward gives: per-class gradients ``(R, N, K, h, w)`` (``None`` when
    no class was asked), the difficulty's gradient ``(N, K, h, w)``, its score ``(N,)`` and,
    for a hardness predictor, its pre-sigmoid output ``z`` ``(N,)`` and ``∂z/∂A``."""

    classes: torch.Tensor | None
    difficulty: torch.Tensor | None
    score: torch.Tensor | None
    z: torch.Tensor | None = None
    z_gradient: torch.Tensor | None = None


def batched_gradients(trace: Trace, layer: str, classes: torch.Tensor | None,
                      spec: DifficultySpec | None, retain_graph: bool = True) -> Rows:
    """Gradients at ``layer`` of the logits of ``classes`` ``(N, R)`` (one class per image and
    row) and of the difficulty score of ``spec``, from one batched backward on ``trace``."""
    tensor = trace.tensor(layer)
    activation = tensor.detach()
    logits = trace.logits
    n, num_classes = logits.shape
    rows = (0 if classes is None else classes.shape[1])
    total = rows + (spec is not None)
    seeds = torch.zeros(total, n, num_classes, dtype=logits.dtype, device=logits.device)
    if classes is not None:
        device = seeds.device
        seeds[torch.arange(rows, device=device)[:, None], torch.arange(n, device=device)[None, :],
              classes.T.to(device)] = 1.0
    score = z = z_seed = None
    z_tensor: torch.Tensor | None = None
    if spec is not None and spec.name != "hp":
        leaf = logits.detach().double().requires_grad_(True)
        with torch.enable_grad():
            s = spec.score_from_logits(leaf)
            (ds,) = torch.autograd.grad(s.sum(), leaf)
        seeds[-1] = ds.to(seeds.dtype)
        score = s.detach()
    elif spec is not None:
        assert spec.predictor is not None and spec.layer is not None
        with model_lock(spec.predictor), eval_mode(spec.predictor), torch.enable_grad():
            z_tensor = spec.predict(trace.tensor(spec.layer))
        z = z_tensor.detach().double()
        score = spec.score_from_z(z)
        z_seed = torch.zeros(total, n, dtype=z_tensor.dtype, device=z_tensor.device)
        z_seed[-1] = 1.0  # the row of ∂z/∂A; scaled to ∂s/∂A below

    head = trace.head()
    logit_rows = rows + (spec is not None and spec.name != "hp")
    if head is not None and head.layer == layer:
        grads = _head_rows(head.weight, head.rectified, activation, seeds)
        if z_tensor is not None:
            assert z_seed is not None
            (extra,) = torch.autograd.grad(z_tensor, tensor, z_seed[-1],
                                           retain_graph=retain_graph)
            grads = torch.cat([grads[:-1], extra[None]])
    else:
        outputs: list[torch.Tensor] = []
        grad_outputs: list[torch.Tensor] = []
        if logit_rows:
            outputs.append(logits)
            grad_outputs.append(seeds)
        if z_tensor is not None:
            assert z_seed is not None
            outputs.append(z_tensor)
            grad_outputs.append(z_seed)
        grads = batched_grad(outputs, tensor, grad_outputs, retain_graph)
    z_gradient = None
    difficulty = None
    if spec is not None:
        difficulty = grads[-1]
        if z_tensor is not None:
            assert z is not None
            z_gradient = difficulty
            if spec.output == "sigmoid":
                sig = torch.sigmoid(z).to(difficulty.dtype)
                difficulty = (sig * (1 - sig)).view(-1, 1, 1, 1) * difficulty
    return Rows(grads[:rows] if rows else None, difficulty, score, z, z_gradient)


def _head_rows(weight: torch.Tensor | None, rectified: bool, activation: torch.Tensor,
               seeds: torch.Tensor) -> torch.Tensor:
    """``∂(seedᵀ z)/∂A`` on a GAP + linear head at its pooled layer: ``(R, N, K, h, w)``."""
    h, w = activation.shape[-2:]
    s = seeds.to(activation.dtype)
    per_channel = s if weight is None else s @ weight.to(activation.dtype)  # (R, N, K)
    grads = (per_channel / (h * w))[..., None, None].expand(*per_channel.shape, h, w)
    return grads * (activation > 0) if rectified else grads  # an expanded view: no copy


def class_maps(gradients: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """``Σ_k A_k ∂z_c/∂A_k`` per cell: ``(R, N, K, h, w)`` -> ``(N, R, h, w)``, raw, signed."""
    return (gradients * activation[None]).sum(dim=2).transpose(0, 1)


def difficulty_map(gradient: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """``Σ_k A_k [∂s/∂A_k]_+`` per cell, ``(N, h, w)``."""
    return (gradient.clamp(min=0) * activation).sum(dim=1)


# ---------------------------------------------------------------------------- second order


def quadratic_term(trace: Trace, layer: str, spec: DifficultySpec, rows: Rows,
                   chunk_size: int = 64) -> tuple[torch.Tensor, bool]:
    """``a_ijᵀ H_ij a_ij`` of the difficulty score per cell ``(N, h, w)``, and whether the
    closed form was used (else batched Hessian-vector products, exact)."""
    tensor = trace.tensor(layer)
    activation = tensor.detach()
    if spec.name == "hp" and spec.layer == layer and rows.z_gradient is not None:
        assert spec.predictor is not None and rows.z is not None
        with model_lock(spec.predictor), eval_mode(spec.predictor), torch.enable_grad():
            z_root = spec.predict(tensor)
        if piecewise_linear(z_root, tensor):
            if spec.output == "logit":
                return torch.zeros_like(activation[:, 0]), True
            sig = torch.sigmoid(rows.z)
            second = (sig * (1 - sig) * (1 - 2 * sig)).to(activation.dtype)
            v = (rows.z_gradient * activation).sum(dim=1)
            return second.view(-1, 1, 1) * v * v, True
    return _hessian_blocks(trace, layer, spec, chunk_size), False


def _hessian_blocks(trace: Trace, layer: str, spec: DifficultySpec,
                    chunk_size: int) -> torch.Tensor:
    tensor = trace.tensor(layer)
    activation = tensor.detach()
    n, _k, h, w = activation.shape
    out = torch.zeros(n, h * w, dtype=activation.dtype, device=activation.device)
    with torch.enable_grad():
        if spec.name == "hp":
            assert spec.predictor is not None and spec.layer is not None
            with model_lock(spec.predictor), eval_mode(spec.predictor):
                score = spec.score_from_z(spec.predict(trace.tensor(spec.layer)))
        else:
            score = spec.score_from_logits(trace.logits)
        (grad,) = torch.autograd.grad(score.sum(), tensor, create_graph=True)
        if not grad.requires_grad:  # the gradient does not depend on A: no curvature
            return out.view(n, h, w)
        for first, stop in chunks(h * w, chunk_size):
            cells = torch.arange(first, stop, device=activation.device)
            mask = torch.zeros(len(cells), h * w, dtype=activation.dtype,
                               device=activation.device)
            mask[torch.arange(len(cells)), cells] = 1.0
            directions = activation[None] * mask.view(len(cells), 1, 1, h, w)
            hv = batched_grad([grad], tensor, [directions], retain_graph=True)
            out[:, first:stop] = (hv * directions).sum(dim=(2, 3, 4)).T
        del grad
    return out.view(n, h, w)


# ---------------------------------------------------------------------------- integrated


def integrated(bundle: ModelBundle, inputs: torch.Tensor, activation: torch.Tensor, layer: str,
               classes: torch.Tensor | None, spec: DifficultySpec | None, steps: int,
               chunk_size: int, progress: Callable[[float], None] | None = None
               ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Layer integrated gradients of the classes ``(N, R, h, w)`` and of the difficulty
    ``(N, h, w)`` (channel sums, raw), sharing every path pass: per chunk of path points one
    forward (a :class:`Trace`) and one batched backward for all rows."""
    n = len(inputs)
    x = inputs.detach().to(activation.device)
    x0 = baseline("black", x, bundle.preprocessing, method="insecurities")
    record = [layer] + ([spec.layer] if spec is not None and spec.layer else [])
    record = list(dict.fromkeys(record))
    copy = [name for name in record if bundle.layers[name].mutated_later]
    start = Trace(bundle, x0, record=record, copy=copy, with_graph=False)
    difference = activation - start.activation(layer)
    del start
    points, weights = quadrature("riemann_right", steps, "insecurities")
    alphas = torch.tensor(points, dtype=x.dtype, device=x.device)
    factors = torch.tensor(weights, dtype=activation.dtype, device=x.device)
    class_total: torch.Tensor | None = None
    difficulty_total: torch.Tensor | None = None
    jobs = n * len(points)
    for first, stop in chunks(jobs, chunk_size):
        job = torch.arange(first, stop, device=x.device)
        step, image = job // n, job % n
        path = torch.addcmul(x0[image], alphas[step].view(-1, 1, 1, 1), (x - x0)[image])
        trace = Trace(bundle, path, record=record, copy=copy, retain_graph=False)
        rows = batched_gradients(trace, layer, None if classes is None else classes[image],
                                 spec, retain_graph=False)
        del trace
        weight = factors[step].view(-1, 1, 1, 1)
        if rows.classes is not None:
            if class_total is None:
                class_total = torch.zeros(rows.classes.shape[0], *activation.shape,
                                          dtype=activation.dtype, device=activation.device)
            class_total.index_add_(1, image, rows.classes * weight[None])
        if rows.difficulty is not None:
            if difficulty_total is None:
                difficulty_total = torch.zeros_like(activation)
            difficulty_total.index_add_(0, image, rows.difficulty * weight)
        if progress is not None:
            progress(stop / jobs)
    class_ig = None if class_total is None else \
        (class_total * difference[None]).sum(dim=2).transpose(0, 1)
    difficulty_ig = None if difficulty_total is None else \
        (difficulty_total * difference).clamp(min=0).sum(dim=1)
    return class_ig, difficulty_ig
