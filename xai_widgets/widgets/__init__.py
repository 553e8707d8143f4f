"""The notebook apps; the only modules that import ipywidgets and ipycanvas."""

from .compare import Compare
from .explorer import Explorer
from .insecurities import Insecurities
from .insecurity_panel import InsecurityPanel
from .xfeatures import XFeatures

__all__ = ["Compare", "Explorer", "Insecurities", "InsecurityPanel", "XFeatures"]
