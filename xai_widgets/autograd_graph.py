"""Which tensors of a recorded graph every backward path must cross.

If every path from the logits to tensor ``X`` goes through tensor ``T`` (``T`` *dominates*
``X``), the gradient at ``X`` can be computed from the already known gradient at ``T`` with
a backward from ``T`` alone: that is how a trace pays only for the missing part of a
backward (Grad-CAM at ``layer4`` first, saliency afterwards costs ``layer4 -> input``).

Dominators are computed once per graph with the iterative algorithm of Cooper, Harvey and
Kennedy ("A Simple, Fast Dominance Algorithm", 2001) on the autograd nodes reachable from
the root; a walk of a ResNet-50 graph takes about a millisecond.

:func:`batched_grad` runs several backward passes of one recorded graph as one batched pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.graph import get_gradient_edge


class Dominators:
    """Dominator tree of the autograd graph below ``root`` (a tensor with a grad_fn)."""

    def __init__(self, root: torch.Tensor) -> None:
        self._root = root.grad_fn
        order: dict[Any, int] = {}  # node -> post-order number
        predecessors: dict[Any, list[Any]] = {self._root: []}
        stack: list[tuple[Any, int]] = [(self._root, 0)]
        visited = {self._root}
        while stack:  # iterative depth-first search, post-order numbering
            node, child = stack.pop()
            successors = [n for n, _ in node.next_functions if n is not None]
            if child < len(successors):
                stack.append((node, child + 1))
                nxt = successors[child]
                predecessors.setdefault(nxt, []).append(node)
                if nxt not in visited:
                    visited.add(nxt)
                    stack.append((nxt, 0))
            else:
                order[node] = len(order)
        self._order = order
        self._idom = self._solve(order, predecessors)

    def _solve(self, order: dict[Any, int], predecessors: dict[Any, list[Any]]) -> dict[Any, Any]:
        idom: dict[Any, Any] = {self._root: self._root}
        reverse_post = sorted(order, key=order.__getitem__, reverse=True)
        changed = True
        while changed:
            changed = False
            for node in reverse_post[1:]:
                done = [p for p in predecessors[node] if p in idom]
                new = done[0]
                for other in done[1:]:
                    new = self._intersect(other, new, idom)
                if idom.get(node) is not new:
                    idom[node] = new
                    changed = True
        return idom

    def _intersect(self, a: Any, b: Any, idom: dict[Any, Any]) -> Any:
        order = self._order
        while a is not b:
            while order[a] < order[b]:
                a = idom[a]
            while order[b] < order[a]:
                b = idom[b]
        return a

    def chain(self, target: torch.Tensor) -> list[Any]:
        """The nodes every backward path from the root to ``target`` crosses, from the
        target's own node up to the root; empty if ``target`` does not influence the root."""
        node = get_gradient_edge(target).node
        if node not in self._idom:
            return []
        nodes = [node]
        while node is not self._root:
            node = self._idom[node]
            nodes.append(node)
        return nodes


def single_output(tensor: torch.Tensor) -> bool:
    """True if ``tensor`` is the only output of its node, so that a gradient known at the
    tensor is all the gradient its node receives."""
    node = tensor.grad_fn
    return node is not None and len(node._input_metadata) == 1


def batched_grad(outputs: list[torch.Tensor], tensor: torch.Tensor,
                  grad_outputs: list[torch.Tensor], retain_graph: bool) -> torch.Tensor:
    """One backward for every row of ``grad_outputs`` (leading dimension ``R``) on the graph
    already built: ``(R, *tensor)``.

    ``torch.func.vmap`` over ``torch.autograd.grad``, not ``is_grads_batched=True``: the latter
    runs on the legacy vmap prototype, which has no batching rule for ``convolution_backward``
    or ``native_batch_norm_backward`` and calls them once per row; functorch's rules call each
    once on all ``R`` rows (a batch of ``R`` in the convolution), with the same values."""

    def row(*seeds: torch.Tensor) -> torch.Tensor:
        (grad,) = torch.autograd.grad(outputs, tensor, seeds, retain_graph=retain_graph,
                                      allow_unused=True)
        return torch.zeros_like(tensor) if grad is None else grad

    return torch.func.vmap(row)(*grad_outputs).detach()
