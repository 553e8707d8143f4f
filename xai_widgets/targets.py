"""Which class to explain, for each image of a batch.

A target is a class index, a class name (``"tabby"``, case-insensitive), ``"top1"`` (the
predicted class) or ``"rankK"`` (the K-th most probable: ``"rank2"`` is the runner-up). One
target applies to every image; a list gives one per image.

``"topK"`` means one thing everywhere in the toolkit: the K most probable classes, a set
(Compare's columns, top-5 re-identification). As one target per image only ``"top1"`` is
one class; :func:`top_count` reads K for the places that take a set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch

from .errors import TargetError, did_you_mean

Target: TypeAlias = "int | str | Sequence[int | str] | torch.Tensor | np.ndarray | None"

_TOP = re.compile(r"top(\d+)", re.IGNORECASE)
_RANK = re.compile(r"rank(\d+)", re.IGNORECASE)


def top_count(text: str, classes: int) -> int | None:
    """K of ``"topK"`` (checked against the number of ``classes``), or ``None`` when ``text``
    is not of that form."""
    top = _TOP.fullmatch(text.strip())
    if top is None:
        return None
    count = int(top.group(1))
    if not 1 <= count <= classes:
        raise TargetError(f"{text!r} asks for the {count} most probable classes; choose top1 "
                          f"to top{classes}")
    return count


def resolve_targets(target: Any, logits: torch.Tensor,
                    class_names: Sequence[str] | None) -> tuple[int, ...]:
    """One class index per image of ``logits`` ``(N, classes)``."""
    count, classes = logits.shape
    if isinstance(target, (torch.Tensor, np.ndarray)):
        target = target.tolist()
    if isinstance(target, (list, tuple)):
        if len(target) != count:
            raise TargetError(f"{len(target)} targets for {count} images; give one target for "
                              "all images or exactly one per image")
        return tuple(_one(t, logits[i], class_names, classes) for i, t in enumerate(target))
    return tuple(_one(target, logits[i], class_names, classes) for i in range(count))


def _one(target: Any, logits: torch.Tensor, class_names: Sequence[str] | None,
         classes: int) -> int:
    if target is None:
        target = "top1"
    if isinstance(target, (bool, np.bool_)):
        raise TargetError(f"target {target!r} is a bool; give a class index, a class name or "
                          "'top1'")
    if isinstance(target, (int, np.integer)):
        index = int(target)
        if not 0 <= index < classes:
            raise TargetError(f"class index {index} is out of range: this model has {classes} "
                              f"classes (0..{classes - 1})")
        return index
    if isinstance(target, str):
        return _by_name(target, logits, class_names, classes)
    raise TargetError(f"a target is a class index, a class name or 'topK', not "
                      f"{type(target).__name__}")


def _by_name(name: str, logits: torch.Tensor, class_names: Sequence[str] | None,
             classes: int) -> int:
    count = top_count(name, classes)
    if count is not None and count > 1:
        raise TargetError(f"{name!r} is the {count} most probable classes, and a target is one "
                          f"class per image: use 'rank{count}' for the class ranked {count}, "
                          f"or Compare(classes={name!r}) to see them side by side")
    ranked = _RANK.fullmatch(name.strip())
    if count is not None or ranked:
        rank = int(ranked.group(1)) if ranked else 1
        if not 1 <= rank <= classes:
            raise TargetError(f"{name!r} asks for rank {rank}; ranks go from rank1 to "
                              f"rank{classes}")
        return int(torch.topk(logits, rank).indices[-1])
    if class_names is None:
        raise TargetError(f"this model has no class names, so {name!r} cannot be looked up; "
                          "give a class index or 'top1'")
    wanted = name.strip().lower()
    matches = [i for i, n in enumerate(class_names) if n.lower() == wanted]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise TargetError(f"{name!r} names {len(matches)} classes "
                          f"({', '.join(map(str, matches))}); give the index instead")
    hint = did_you_mean(wanted, [n.lower() for n in class_names])
    raise TargetError(f"unknown class name {name!r}; "
                      f"{hint or 'give a class index, a name from model.class_names, or top1'}")
