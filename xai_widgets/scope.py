"""Scoped, restorable changes to a user's model.

Everything the toolkit does to a model (eval mode, forward hooks) happens inside one of these
context managers, and is undone in ``finally``, whether the body returns or raises: after any
call the model has the same modes, hooks and modules as before (DESIGN rule 2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

ForwardHook = Callable[[nn.Module, Any, Any], Any]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the duration; restore each one's own flag."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def forward_hooks(hooks: Mapping[nn.Module, ForwardHook]) -> Iterator[None]:
    """Register one forward hook per module for the duration."""
    handles: list[RemovableHandle] = []
    try:
        for module, hook in hooks.items():
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
