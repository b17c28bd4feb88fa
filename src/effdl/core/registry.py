"""A small name -> object registry with helpful errors, used by every pluggable family in effdl."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from effdl.core.errors import ConfigError, UnknownNameError

__all__ = ["Registry", "RegistryEntry"]

T = TypeVar("T")


@dataclass(frozen=True)
class RegistryEntry(Generic[T]):
    """One registered object with its name, a one-line description and free-form metadata.

    Example:
        >>> RegistryEntry("relu", max, "max with zero").name
        'relu'
    """

    name: str
    obj: T
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps names to objects (factories, criteria, proxies) of one kind.

    Lookups accept a registered name or, where the caller allows it, a callable that is returned as it is; an
    unknown name raises :class:`UnknownNameError` listing the valid names and the closest matches.

    Args:
        kind: what the registry holds, used in messages ("model", "dataset", ...).

    Example:
        >>> reg = Registry("activation")
        >>> @reg.register("double", description="x * 2")
        ... def double(x):
        ...     return 2 * x
        >>> reg.get("double")(3)
        6
        >>> reg.get("tripple")
        Traceback (most recent call last):
        ...
        effdl.core.errors.UnknownNameError: unknown activation 'tripple'; valid activations: double
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, RegistryEntry[T]] = {}

    def register(self, name: str, *, description: str = "", **meta: Any) -> Callable[[T], T]:
        """Decorator that registers an object under ``name``; returns the object unchanged."""

        def decorator(obj: T) -> T:
            self.add(name, obj, description=description, **meta)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, description: str = "", **meta: Any) -> None:
        """Registers ``obj`` under ``name``; a name may be registered only once.

        Example:
            >>> reg = Registry("thing")
            >>> reg.add("a", 1)
            >>> reg.get("a")
            1
        """
        key = name.lower()
        if key in self._entries:
            raise ConfigError(f"{self.kind} {name!r} is already registered; pick another name")
        self._entries[key] = RegistryEntry(key, obj, description, dict(meta))

    def get(self, name: str | T, *, allow_callable: bool = True) -> T:
        """Returns the object registered under ``name``, or ``name`` itself if it is callable and allowed."""
        if not isinstance(name, str):
            if allow_callable and callable(name):
                return name
            raise ConfigError(f"expected a {self.kind} name (str), got {type(name).__name__}")
        return self.entry(name).obj

    def entry(self, name: str) -> RegistryEntry[T]:
        """Returns the full :class:`RegistryEntry` for ``name``.

        Example:
            >>> reg = Registry("thing")
            >>> reg.add("a", 1, description="the first")
            >>> reg.entry("A").description
            'the first'
        """
        key = name.lower()
        if key not in self._entries:
            valid = ", ".join(self.names()) or "(none registered)"
            close = difflib.get_close_matches(key, self.names(), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}{hint}")
        return self._entries[key]

    def names(self) -> list[str]:
        """Sorted registered names.

        Example:
            >>> reg = Registry("thing")
            >>> reg.add("b", 2); reg.add("a", 1)
            >>> reg.names()
            ['a', 'b']
        """
        return sorted(self._entries)

    def entries(self) -> list[RegistryEntry[T]]:
        """All entries, sorted by name."""
        return [self._entries[k] for k in self.names()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
