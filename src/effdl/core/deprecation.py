"""Deprecation shims: old public names keep working for one release, warn once, and name the new spelling."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["deprecated_config", "module_getattr", "warn_once"]

_WARNED: set[str] = set()


def warn_once(old: str, new: str) -> None:
    """Warns (``FutureWarning``, shown by default) the first time ``old`` is used in this process."""
    if old in _WARNED:
        return
    _WARNED.add(old)
    message = f"{old} is deprecated and will be removed in the next release; use {new}"
    warnings.warn(message, FutureWarning, stacklevel=3)


def deprecated_config(old_name: str, new: type) -> type:
    """A stand-in for a renamed config class: calling it warns once and builds ``new`` (old field names are read
    through ``new.upgrade(kwargs, 1)``), and ``isinstance`` checks against it see ``new``.

    Example:
        >>> import dataclasses
        >>> from effdl.core.config import Config, rename_fields
        >>> @dataclasses.dataclass(frozen=True, kw_only=True)
        ... class NewConfig(Config):
        ...     config_version = 2
        ...     ratio: float = 0.5
        ...     @classmethod
        ...     def upgrade(cls, data, version):
        ...         return rename_fields(cls, data, {"rate": "ratio"})
        >>> Old = deprecated_config("OldConfig", NewConfig)
        >>> import warnings
        >>> with warnings.catch_warnings(record=True):
        ...     Old(rate=0.25)
        NewConfig(ratio=0.25)
        >>> isinstance(NewConfig(), Old)
        True
    """

    class _Shim(type):
        def __call__(cls, *args: Any, **kwargs: Any) -> Any:
            warn_once(old_name, new.__name__)
            upgrade = getattr(new, "upgrade", None)
            if upgrade is not None and getattr(new, "config_version", 1) > 1:
                kwargs = upgrade(kwargs, 1)
            return new(*args, **kwargs)

        def __instancecheck__(cls, obj: Any) -> bool:
            return isinstance(obj, new)

        def __subclasscheck__(cls, sub: type) -> bool:
            return issubclass(sub, new)

        def __getattr__(cls, name: str) -> Any:
            return getattr(new, name)

    return _Shim(old_name, (), {"__doc__": f"Deprecated alias of :class:`{new.__name__}`."})


def module_getattr(module: str, aliases: dict[str, Callable[[], Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that serves deprecated names: ``aliases`` maps each old name to a function
    returning its replacement (called on first use, so nothing is imported early).

    Example:
        >>> __getattr__ = module_getattr("demo", {"old": lambda: 42})
        >>> __getattr__("old")
        42
    """

    def __getattr__(name: str) -> Any:
        if name in aliases:
            return aliases[name]()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
