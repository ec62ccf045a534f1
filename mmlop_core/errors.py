"""Typed errors of the MMLoP library.

Every error raised on bad input or a missing resource derives from :class:`MMLoPError`, so the
service maps all of them to RFC 9457 problem+json in one handler and the CLI prints one line.
Messages are a single line that names the offending field, file or value and says what to do.
"""
from __future__ import annotations


def short_repr(value: object, limit: int = 40) -> str:
    """``repr(value)`` for a one-line message, cut to `limit` characters (ending in "...").

    A 401-digit integer or a megabyte of text in a bad setting must not become the message.
    """
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class MMLoPError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(MMLoPError):
    """A configuration field has an unknown name, a wrong type or an out-of-range value."""


class BackboneUnavailableError(MMLoPError):
    """The CLIP backbone's weights can be neither fetched nor read."""


class BackboneMismatchError(MMLoPError):
    """An adapter was trained on another backbone than the one it is loaded with."""


class CheckpointError(MMLoPError):
    """An adapter checkpoint is missing, unreadable, or has wrong shapes or dtypes."""


class ImageError(MMLoPError):
    """Image bytes cannot be decoded, or the image breaks a size limit."""


class DataError(MMLoPError):
    """Training data is inconsistent: labels vs images, empty classes, bad class names."""


class NonFiniteOutputError(MMLoPError):
    """The model produced NaN or infinite scores (corrupt weights or numerical overflow).

    Never served as a prediction: the API answers 500 ``non-finite-output`` and logs the cause.
    """


class TrainingCanceled(MMLoPError):
    """A training callback asked the trainer to stop before the end."""


class TimeBudgetExceeded(MMLoPError):
    """The training time budget (``TrainConfig.max_seconds``) ran out before the first step.

    Raised when the budget is spent by the time the class text features are done (checked
    between their chunks and once after them), so no step runs past it; once training has
    started, the budget stops it after the current step instead (``stopped_early="max_seconds"``).
    """
