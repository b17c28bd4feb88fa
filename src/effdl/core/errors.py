"""The project's exception classes.

Every error raised by effdl derives from :class:`EffdlError`, and each also derives from the built-in exception a
caller would expect (``ValueError``, ``LookupError``, ``FileNotFoundError``), so that generic handlers keep working.
Messages say what was expected, what arrived, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetNotFoundError",
    "EffdlError",
    "NonFiniteError",
    "ShapeError",
    "UnknownNameError",
    "UnsafeCheckpointError",
    "UnsupportedError",
]


class EffdlError(Exception):
    """Base class of all errors raised by effdl.

    Example:
        >>> issubclass(ConfigError, EffdlError)
        True
    """


class ConfigError(EffdlError, ValueError):
    """A configuration value is out of range, of the wrong type, or unknown.

    Example:
        >>> raise ConfigError("lr must be > 0, got lr=-1; use lr=1e-3")
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: lr must be > 0, got lr=-1; use lr=1e-3
    """


class UnknownNameError(EffdlError, LookupError):
    """A name was looked up in a registry that does not hold it; the message lists the valid names.

    Example:
        >>> isinstance(UnknownNameError("unknown model 'x'"), LookupError)
        True
    """


class ShapeError(EffdlError, ValueError):
    """A tensor has a shape that the model or function cannot take.

    Example:
        >>> isinstance(ShapeError("bad shape"), ValueError)
        True
    """


class DatasetNotFoundError(EffdlError, FileNotFoundError):
    """The files of a dataset that must be read from a local path are missing.

    Example:
        >>> isinstance(DatasetNotFoundError("missing"), FileNotFoundError)
        True
    """


class CheckpointError(EffdlError, ValueError):
    """A checkpoint is corrupt, truncated, of an unknown format, or does not match the model.

    Example:
        >>> isinstance(CheckpointError("truncated"), ValueError)
        True
    """


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint format that can execute code on load (pickle) was given without an explicit trust flag.

    Example:
        >>> issubclass(UnsafeCheckpointError, CheckpointError)
        True
    """


class UnsupportedError(EffdlError, NotImplementedError):
    """A layer, operation or option is not supported; the message names it and says what to do instead.

    Example:
        >>> isinstance(UnsupportedError("no"), NotImplementedError)
        True
    """


class NonFiniteError(EffdlError, FloatingPointError):
    """A loss, weight or input became NaN or infinite; the message says where and what to change.

    Example:
        >>> isinstance(NonFiniteError("loss is nan"), FloatingPointError)
        True
    """
