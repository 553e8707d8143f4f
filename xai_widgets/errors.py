"""One family of errors, raised where user input enters the toolkit.

Every message says what was wrong, what is accepted, and a hint. Each subclass is also the
built-in exception a Python user would expect (``ValueError``, ``TypeError``, ...), so code
that already catches those keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class XaiError(Exception):
    """Base class of every error xai_widgets raises on purpose."""


class ImageError(XaiError, ValueError):
    """The image could not be read, or is not an image the toolkit accepts."""


class ModelError(XaiError, ValueError):
    """The model cannot be used as asked (no spatial layer, not a classifier, ...)."""


class ModelDownloadError(ModelError, ConnectionError):
    """Pretrained weights are not on disk and cannot be downloaded."""


class LayerError(XaiError, ValueError):
    """Unknown, ambiguous or unusable layer."""


class TargetError(XaiError, ValueError):
    """Unknown class name, class index out of range, or a target of the wrong form."""


class MethodError(XaiError, ValueError):
    """Unknown method, or a method that is not defined for this model or layer."""


class ParameterError(XaiError, ValueError):
    """A method parameter is out of range or of the wrong type."""


class MetricError(XaiError, ValueError):
    """A map, a region, a setting or a results file that a metric cannot use as given."""


class RuleWarning(UserWarning):
    """A backward rule could not be applied exactly everywhere (the result is approximate)."""


class EmptyMapWarning(UserWarning):
    """A map is zero everywhere: it shows nothing, and metrics would rank its pixels by
    position only (a class whose head weights are zero, a model that ignores its input, a
    baseline equal to the input, a zero initialisation)."""


class MetricWarning(UserWarning):
    """A metric's value rests on an arbitrary choice (a constant map orders its pixels by
    position only)."""


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """A hint sentence naming the closest choices, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)
    if not close:
        return ""
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"
