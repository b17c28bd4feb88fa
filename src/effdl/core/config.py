"""Base class of effdl's configuration objects: frozen, keyword-only dataclasses that validate themselves and
round-trip through plain dicts with a type tag and a version (so that a list of them, a recipe, can be saved as YAML
or JSON and replayed, and a dict finds its class again)."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from typing import Any, ClassVar, Self, TypeVar

from effdl.core.errors import ConfigError, UnknownNameError

__all__ = [
    "Config",
    "check_choice",
    "check_options",
    "check_range",
    "config_class",
    "config_types",
    "last_match",
    "name_matches",
    "rename_fields",
]

T = TypeVar("T")

#: keys every config dict carries besides its fields
TYPE_KEY, VERSION_KEY = "type", "version"

# tag -> config class; filled by Config.__init_subclass__ (every subclass registers itself under its tag)
_CONFIG_TYPES: dict[str, type[Config]] = {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Base of every configuration: subclasses are ``@dataclass(frozen=True, kw_only=True)`` and override
    :meth:`validate` to check their fields, raising :class:`ConfigError` with a fix.

    Every subclass registers itself under a type tag (its class name unless it sets ``config_tag``) with a version
    (``config_version``); :meth:`to_dict` writes both, and ``Config.from_dict`` finds the class from the tag, so a
    saved list of configs (a recipe) is replayed without a table of step kinds. A class whose fields change raises
    its version and overrides :meth:`upgrade` to read dicts of older versions.

    Example:
        >>> @dataclasses.dataclass(frozen=True, kw_only=True)
        ... class Demo(Config):
        ...     ratio: float = 0.5
        ...     def validate(self):
        ...         check_range("ratio", self.ratio, 0.0, 1.0, hint="use ratio=0.5")
        >>> Demo(ratio=0.25).to_dict()
        {'type': 'Demo', 'version': 1, 'ratio': 0.25}
        >>> Config.from_dict({"type": "Demo", "ratio": 0.25})
        Demo(ratio=0.25)
        >>> Demo(ratio=2.0)
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: ratio must be in [0.0, 1.0], got ratio=2.0; use ratio=0.5
    """

    config_tag: ClassVar[str] = ""
    config_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tag = cls.__dict__.get("config_tag") or cls.__name__
        cls.config_tag = tag
        known = _CONFIG_TYPES.get(tag)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ConfigError(
                f"config tag {tag!r} is taken by {known.__module__}.{known.__qualname__}; give "
                f"{cls.__module__}.{cls.__qualname__} another name or set config_tag"
            )
        _CONFIG_TYPES[tag] = cls  # the same class defined again (a reloaded module, a doctest) replaces itself

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks field values; the default accepts everything."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict: the type tag, the version, then the fields (tuples become lists, nested configs
        dicts), suitable for JSON or YAML."""
        fields = {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {TYPE_KEY: self.config_tag, VERSION_KEY: self.config_version, **fields}

    def describe(self) -> str:
        """One line for tables and logs (subclasses say what they do, e.g. ``prune structured l1 50%``).

        Example:
            >>> @dataclasses.dataclass(frozen=True, kw_only=True)
            ... class DemoConfig(Config):
            ...     n: int = 1
            >>> DemoConfig().describe()
            'Demo'
        """
        return self.config_tag.removesuffix("Config") or self.config_tag

    @classmethod
    def upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        """Turns the fields of a dict written at an older ``version`` into the current ones (default: as they
        are). Subclasses that rename or change fields override it."""
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Builds the config from a dict, rejecting unknown fields with the list of valid ones.

        A ``type`` tag picks the class (it must be ``cls`` or a subclass); without one, ``cls`` itself is built.
        A dict of an older ``version`` goes through :meth:`upgrade` first.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} expects a mapping of field names to values, got {type(data).__name__}")
        data = dict(data)
        tag = data.pop(TYPE_KEY, None)
        version = data.pop(VERSION_KEY, None)
        target = cls if tag is None else config_class(tag)
        if not issubclass(target, cls):
            raise ConfigError(f"expected a {cls.__name__} (or a subclass), got a dict of type {tag!r}")
        if target is Config:
            raise ConfigError("a config dict needs a 'type' tag naming its class, e.g. {type: StructuredPruneConfig}")
        if version is not None:
            if isinstance(version, bool) or not isinstance(version, int):
                raise ConfigError(f"{target.__name__}: version must be an integer, got {version!r}")
            if version > target.config_version:
                raise ConfigError(
                    f"{target.__name__} version {version} was written by a newer effdl (this one reads up to "
                    f"version {target.config_version}); upgrade effdl"
                )
            if version < target.config_version:
                data = target.upgrade(data, version)
        return target._build(data)

    @classmethod
    def _build(cls, data: dict[str, Any]) -> Self:
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


def config_class(tag: str) -> type[Config]:
    """The config class registered under ``tag``.

    Example:
        >>> config_class("QuantConfig").__name__
        'QuantConfig'
    """
    if not isinstance(tag, str) or tag not in _CONFIG_TYPES:
        valid = ", ".join(sorted(t for t in _CONFIG_TYPES if not t.startswith("_")))
        close = difflib.get_close_matches(str(tag), list(_CONFIG_TYPES), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownNameError(f"unknown config type {tag!r}; known config types: {valid}{hint}")
    return _CONFIG_TYPES[tag]


def config_types() -> dict[str, type[Config]]:
    """Every registered config class by tag (a copy)."""
    return dict(_CONFIG_TYPES)


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
        if isinstance(value, dict):  # a nested config: the union member that is a Config class (or its tag's)
            for arg in args:
                if isinstance(arg, type) and issubclass(arg, Config):
                    return arg.from_dict(value)
        for arg in args:
            if arg is not type(None):
                return _coerce(name, value, arg)
    if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, dict):
        return hint.from_dict(value)
    if origin is tuple and isinstance(value, list | tuple):
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
            return tuple(_coerce(name, v, args[0]) for v in value)
        if args and len(args) == len(value):
            return tuple(_coerce(name, v, a) for v, a in zip(value, args, strict=True))
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
    if bad_low or bad_high or value != value or value in (float("inf"), float("-inf")):  # NaN and infinities too
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


def last_match(name: str, overrides: typing.Mapping[str, T], default: T | None = None) -> T | None:
    """The value of the last entry of ``overrides`` (module name or regex -> value) that matches ``name``, else
    ``default``: the one rule of per-layer overrides in every family.

    Example:
        >>> last_match("features.3", {r"features\\.\\d": 0.5, "features.3": 0.25}, 0.1)
        0.25
        >>> last_match("fc", {r"features\\.\\d": 0.5}, 0.1)
        0.1
    """
    value = default
    for pattern, v in overrides.items():
        if name_matches(name, pattern):
            value = v
    return value


def rename_fields(cls: type, data: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    """``data`` with old field names replaced by new ones (for :meth:`Config.upgrade`); a dict that has both
    spellings is refused.

    Example:
        >>> rename_fields(Config, {"sparsity": 0.9}, {"sparsity": "ratio"})
        {'ratio': 0.9}
    """
    out = dict(data)
    for old, new in renames.items():
        if old in out:
            if new in out:
                raise ConfigError(f"{cls.__name__} got both {old!r} (the old name) and {new!r}; keep only {new!r}")
            out[new] = out.pop(old)
    return out
