"""The notebook apps; the only modules that import ipywidgets and ipycanvas."""

from .compare import Compare
from .explorer import Explorer

__all__ = ["Compare", "Explorer"]
