"""Base class of effdl's configuration objects: frozen, keyword-only dataclasses that validate themselves and
round-trip through plain dicts (so that a list of them, a recipe, can be saved as YAML or JSON and replayed)."""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from typing import Any, ClassVar, Self

from effdl.core.errors import ConfigError

__all__ = ["Config", "check_choice", "check_options", "check_range", "name_matches"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Base of every configuration: subclasses are ``@dataclass(frozen=True, kw_only=True)`` and override
    :meth:`validate` to check their fields, raising :class:`ConfigError` with a fix.

    Example:
        >>> @dataclasses.dataclass(frozen=True, kw_only=True)
        ... class Demo(Config):
        ...     ratio: float = 0.5
        ...     def validate(self):
        ...         check_range("ratio", self.ratio, 0.0, 1.0, hint="use ratio=0.5")
        >>> Demo.from_dict({"ratio": 0.25}).to_dict()
        {'ratio': 0.25}
        >>> Demo(ratio=2.0)
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: ratio must be in [0.0, 1.0], got ratio=2.0; use ratio=0.5
    """

    config_name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks field values; the default accepts everything."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict of the fields (tuples become lists), suitable for JSON or YAML."""
        return {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Builds the config from a dict, rejecting unknown fields with the list of valid ones."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} expects a mapping of field names to values, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(
                f"{cls.__name__} has no field(s) {', '.join(map(repr, unknown))}; valid fields: {', '.join(fields)}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {k: _coerce(k, v, hints.get(k)) for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:  # e.g. a missing required field
            raise ConfigError(f"{cls.__name__}: {exc}") from exc

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (and validated again).

        Example:
            >>> @dataclasses.dataclass(frozen=True, kw_only=True)
            ... class Demo(Config):
            ...     n: int = 1
            >>> Demo().replace(n=3).n
            3
        """
        return dataclasses.replace(self, **changes)


def _to_plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Turns JSON/YAML values back into the declared types (lists -> tuples, ints -> floats)."""
    if hint is None:
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                return _coerce(name, value, arg)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{name} must be of type {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> None:
    """Raises :class:`ConfigError` unless ``low <= value <= high`` (with open ends where asked).

    Example:
        >>> check_range("lr", 0.1, 0.0, low_open=True)
        >>> check_range("lr", 0.0, 0.0, low_open=True, hint="use lr=1e-3")
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: lr must be in (0.0, inf), got lr=0.0; use lr=1e-3
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}" + (f"; {hint}" if hint else ""))
    lo = float("-inf") if low is None else low
    hi = float("inf") if high is None else high
    bad_low = value <= lo if low_open else value < lo
    bad_high = value >= hi if high_open else value > hi
    if bad_low or bad_high or value != value:
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        msg = f"{name} must be in {left}{lo}, {hi}{right}, got {name}={value}"
        raise ConfigError(msg + (f"; {hint}" if hint else ""))


def check_choice(name: str, value: str, choices: typing.Iterable[str]) -> None:
    """Raises :class:`ConfigError` unless ``value`` is one of ``choices``.

    Example:
        >>> check_choice("optimizer", "lion", ["sgd", "adam"])
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: optimizer must be one of 'sgd', 'adam', got optimizer='lion'
    """
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {name}={value!r}")


def check_options(owner: str, factory: typing.Callable, options: dict, *, reserved: tuple[str, ...] = ()) -> None:
    """Raises :class:`ConfigError` if ``options`` has keys that ``factory`` does not take (or that are reserved).

    Example:
        >>> def make(*, width=1, depth=2): ...
        >>> check_options("net", make, {"widht": 3})
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: net got unknown option(s) 'widht'; valid options: width, depth
    """
    valid = [name for name in inspect.signature(factory).parameters if name not in reserved]
    unknown = [key for key in options if key not in valid]
    if unknown:
        listed = ", ".join(valid) or "(none)"
        raise ConfigError(f"{owner} got unknown option(s) {', '.join(map(repr, unknown))}; valid options: {listed}")


def name_matches(name: str, pattern: str) -> bool:
    """Whether ``pattern`` is the module name ``name`` itself or a regular expression that matches all of it.

    Example:
        >>> name_matches("features.0", "features.0"), name_matches("features.3", r"features\\.\\d")
        (True, True)
        >>> name_matches("fc", "[")  # not a valid regex, and not the name
        False
    """
    if name == pattern:
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False
