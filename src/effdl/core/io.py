"""Atomic file writes and small JSON helpers shared by checkpoints, reports and caches."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "json_safe",
    "load_yaml",
    "note_written",
    "publish",
    "track_writes",
]

#: claimed output folders (resolved) -> the function that records a file written under them
_TRACKED: dict[Path, Callable[[Path], None]] = {}


def track_writes(root: str | os.PathLike, recorder: Callable[[Path], None] | None) -> None:
    """Registers (or, with ``None``, unregisters) ``recorder`` to be called with every file effdl writes under
    ``root``: how an output folder knows which files are its own (:mod:`effdl.core.rundir`)."""
    key = Path(root).resolve()
    if recorder is None:
        _TRACKED.pop(key, None)
    else:
        _TRACKED[key] = recorder


def note_written(path: str | os.PathLike) -> None:
    """Tells the output folders that contain ``path`` that effdl wrote it (writers outside this module call it)."""
    if not _TRACKED:
        return
    full = Path(path).resolve()
    for root, recorder in list(_TRACKED.items()):
        if full.is_relative_to(root):
            recorder(full)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Moves a finished temporary file onto ``path`` atomically, with the permissions the user's umask gives new
    files (temporary files are created private), and records the write (:func:`note_written`)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    note_written(path)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` through a temporary file in the same folder and an atomic rename, so that a
    reader (or a crash) never sees a half-written file.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
        >>> atomic_write_bytes(p, b"abc").read_bytes()
        b'abc'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> atomic_write_text(p, "hi").read_text()
        'hi'
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (JSON has no NaN; ``json.dumps`` would write a bare
    ``NaN`` that other readers reject).

    Example:
        >>> json_safe({"a": float("nan"), "b": [1.0, float("inf")], "c": (2,)})
        {'a': None, 'b': [1.0, None], 'c': [2]}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes ``obj`` as indented JSON, atomically; NaN and infinities are written as ``null`` (valid JSON).

    Example:
        >>> import tempfile, pathlib, json
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.json"
        >>> json.loads(atomic_write_json(p, {"a": 1, "b": float("nan")}).read_text())
        {'a': 1, 'b': None}
    """
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


#: the largest YAML text effdl reads (recipes, options): far above any real recipe, far below what can hurt
MAX_YAML_BYTES = 1 << 20


def load_yaml(text: str, *, what: str = "YAML") -> Any:
    r"""Parses YAML safely: only plain data (``yaml.safe_load``'s types), no aliases (``*name`` references, which let
    a few hundred bytes expand to gigabytes), at most :data:`MAX_YAML_BYTES`. Raises :class:`ConfigError` with what
    is wrong.

    Example:
        >>> load_yaml("steps: [1, 2]")
        {'steps': [1, 2]}
        >>> load_yaml("a: &x [1]\nb: *x", what="recipe")
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: recipe uses a YAML alias (*x); effdl reads plain data only: write the value out
    """
    import yaml

    from effdl.core.errors import ConfigError

    if len(text.encode()) > MAX_YAML_BYTES:
        raise ConfigError(f"{what} is {len(text.encode())} bytes, over the {MAX_YAML_BYTES} effdl reads; is it the "
                          "right file?")  # fmt: skip

    class _NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ConfigError(
                    f"{what} uses a YAML alias (*{event.anchor}); effdl reads plain data only: write the value out"
                )
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=_NoAliases)  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} is not valid YAML: {exc}") from exc
