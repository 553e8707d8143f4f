"""The errors of the x-feature analysis: part of the one family of :mod:`xai_widgets.errors`."""

from __future__ import annotations

from ..errors import XaiError


class XFeatureDataError(XaiError, ValueError):
    """The images cannot train an x-feature network as asked (no positive image, too few
    images, nothing readable, a class the model does not have, ...)."""


class XFeatureFileError(XaiError, ValueError):
    """A saved x-feature network or checkpoint cannot be read or does not fit the model."""
