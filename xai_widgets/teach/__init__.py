"""Exercises that check themselves, for the course in ``notebooks/``.

>>> from xai_widgets.teach import check, solution
>>> check("cam.weights", weights, bundle=bundle, image=cat, layer="blocks.5", target=281)
✓ cam.weights: right — ...
>>> solution("cam.weights")          # one solution, collapsed in a notebook

Every check recomputes the answer with the toolkit (the real method on the real model) and
compares; it says *right*, *wrong* and why, or *not yet* while the answer is still ``None``.
One module per notebook holds that notebook's exercises: :mod:`.quickstart`,
:mod:`.cam_family`, :mod:`.gradients`, :mod:`.integrated`, :mod:`.excitation`,
:mod:`.inversion`, :mod:`.layerwise`, :mod:`.trust`; :mod:`.pictures` has the small
plotting helpers the notebooks share.
"""

from __future__ import annotations

import importlib

from ._common import input_gradients, trace
from .core import EXERCISES, Exercise, Solution, Verdict, check, exercises, solution
from .pictures import Picture, plot, show

MODULES = ("quickstart", "cam_family", "gradients", "integrated", "excitation", "inversion",
           "layerwise", "trust")


def _load_all() -> None:
    """Import every exercise module (each registers its exercises once)."""
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")


__all__ = ["EXERCISES", "Exercise", "Picture", "Solution", "Verdict", "check", "exercises",
           "input_gradients", "plot", "show", "solution", "trace"]
