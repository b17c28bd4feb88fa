"""Output folders that one effdl run owns.

A run that writes into a folder (``--out``) claims it first with :func:`claim_run_dir`:

- an **exclusive lock** (``OUT/.effdl/lock``, ``flock``) for as long as the run lasts: a second run into the same
  folder is refused with the holder's command, process id and start time (the operating system drops the lock
  when a process dies, so a killed run never leaves a stale lock);
- a **marker** (``OUT/.effdl/run.json``): which command wrote the folder and the run's identity (its inputs'
  fingerprints, settings, the effdl and torch versions and the thread count);
- a **log of the files it wrote** (``OUT/.effdl/files.log``, fed by every write of :mod:`effdl.core.io`).

Starting over (a new run of the same command, or ``restart``) deletes only the files in that log, never a file
effdl did not write; ``restart`` refuses a non-empty folder effdl does not own. Resuming compares the identity
field by field and refuses a mismatch, naming the field. Nothing in the folder changes before the run is
accepted, except the lock file.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from effdl._version import __version__
from effdl.core.errors import ConfigError
from effdl.core.io import atomic_write_json, json_safe, track_writes

__all__ = ["MARKER_DIR", "RunDir", "RunDirError", "claim_run_dir", "run_identity"]

log = logging.getLogger(__name__)

MARKER_DIR = ".effdl"
_RUN, _FILES, _LOCK = "run.json", "files.log", "lock"
_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # the temporary files of effdl's atomic writes
_HELD: dict[Path, RunDir] = {}  # folders this process holds (a nested claim of the same folder shares the claim)


class RunDirError(ConfigError):
    """An output folder cannot be used for this run: another run holds it, it belongs to another command, it
    is not effdl's, or a resume does not continue the same run; the message names the field and the way out.

    Example:
        >>> issubclass(RunDirError, ConfigError)
        True
    """


def run_identity(**fields: Any) -> dict[str, Any]:
    """What a resumed run must share with the run it continues: ``fields`` (fingerprints of the inputs and the
    settings) plus the effdl and torch versions and torch's thread count (results are bit-identical only under
    the same count).

    Example:
        >>> sorted(run_identity(data="abc"))
        ['data', 'effdl', 'threads', 'torch']
    """
    return {**json.loads(json.dumps(json_safe(fields), default=str)), "effdl": __version__,
            "torch": torch.__version__, "threads": torch.get_num_threads()}  # fmt: skip


class RunDir:
    """A claimed output folder (from :func:`claim_run_dir`).

    Attributes:
        path: the folder.
        command: the command that claimed it.
        resumed: True when an earlier run in the folder is being continued.
    """

    def __init__(self, path: Path, command: str, resumed: bool) -> None:
        self.path, self.command, self.resumed = path, command, resumed
        self._root = path.resolve()
        self._known: set[str] = set(_read_log(path))

    def record(self, file: Path) -> None:
        """Adds ``file`` (under the folder) to the log of files this run wrote."""
        rel = file.resolve().relative_to(self._root).as_posix()
        if rel.startswith(MARKER_DIR + "/") or rel in self._known:
            return
        self._known.add(rel)
        with (self.path / MARKER_DIR / _FILES).open("a") as fh:
            fh.write(rel + "\n")

    @property
    def files(self) -> list[str]:
        """The files (relative paths) effdl wrote into the folder, in the order first written."""
        return _read_log(self.path)


@contextlib.contextmanager
def claim_run_dir(
    path: str | os.PathLike,
    *,
    command: str,
    identity: dict[str, Any] | None = None,
    resume: bool = False,
    restart: bool = False,
) -> Iterator[RunDir]:
    """Claims ``path`` for one run (see the module's description) and yields its :class:`RunDir`.

    Args:
        path: the output folder (created if missing).
        command: the command writing it (``"train"``, ``"compress"``...); a folder written by another command is
            refused unless ``restart``.
        identity: from :func:`run_identity`; a resumed run must match it.
        resume: continue the run in the folder (an empty or new folder just starts).
        restart: delete the earlier run's files (only those effdl wrote) and start over.

    Raises:
        RunDirError: another process holds the folder, it holds another command's results, ``restart`` on a
            folder effdl does not own, or a resume whose identity differs.
        OSError: the folder cannot be created or written (read-only, a file of that name, full disk).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> with claim_run_dir(d, command="demo", identity=run_identity(seed=1)) as run:
        ...     _ = atomic_write_json(f"{d}/report.json", {})
        >>> run.files
        ['report.json']
        >>> with claim_run_dir(d, command="demo", identity=run_identity(seed=2), resume=True):
        ...     pass
        Traceback (most recent call last):
        ...
        effdl.core.rundir.RunDirError: cannot resume ... (seed=1 there, seed=2 here); resume with the same seed, ...
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output folder {path} is a file; choose a folder for --out")
    key = path.resolve()
    if key in _HELD:  # a nested call of this process (e.g. a sweep's runs share their parent's claim)
        yield _HELD[key]
        return
    path.mkdir(parents=True, exist_ok=True)
    marker_dir = path / MARKER_DIR
    created_marker_dir = not marker_dir.exists()
    marker_dir.mkdir(exist_ok=True)
    lock = open(marker_dir / _LOCK, "a+")  # held open (and locked) for the whole run
    try:
        _lock(lock, path, command)
        try:
            run = _accept(path, command, identity or run_identity(), resume, restart)
        except BaseException:
            if created_marker_dir:  # a refused run leaves the folder as it found it
                (marker_dir / _LOCK).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    marker_dir.rmdir()
            raise
        _HELD[key] = run
        track_writes(key, run.record)
        try:
            yield run
        finally:
            track_writes(key, None)
            _HELD.pop(key, None)
    finally:
        lock.close()  # releases the lock


def _lock(fh, path: Path, command: str) -> None:
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        raise RunDirError(
            f"{path} is in use by another effdl run ({holder}); wait for it to finish, or choose another --out"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"`effdl {command}`, pid {os.getpid()}, started {_now()}")
    fh.flush()


def _accept(path: Path, command: str, identity: dict[str, Any], resume: bool, restart: bool) -> RunDir:
    marker = _read_marker(path)
    if marker is None:
        others = [p.name for p in path.iterdir() if p.name != MARKER_DIR]
        if restart and others:
            raise RunDirError(
                f"{path} was not written by effdl (no {MARKER_DIR}/{_RUN}) and holds {len(others)} entries "
                f"({', '.join(sorted(others)[:3])}...); restart deletes only an effdl run's own files: choose an "
                "empty or new folder for --out"
            )
        resumed = False
    elif marker.get("command") != command:
        raise RunDirError(
            f"{path} holds the results of `effdl {marker.get('command')}` (started {marker.get('started')}), not of "
            f"{command}; choose another --out (restart replaces only a run of the same command)"
        )
    elif resume and not restart:
        _check_same(path, marker.get("identity", {}), identity)
        resumed = True
    else:
        _clean(path)
        resumed = False
    _remove_stale_tmp(path)
    if not resumed:
        (path / MARKER_DIR / _FILES).write_text("")
        atomic_write_json(path / MARKER_DIR / _RUN, {"format": "effdl.run", "command": command,
                                                     "run": uuid.uuid4().hex, "started": _now(),
                                                     "identity": identity})  # fmt: skip
    return RunDir(path, command, resumed)


def _check_same(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    was_flat, now_flat = _flatten(saved), _flatten(now)
    changed = [k for k in sorted(set(was_flat) | set(now_flat)) if was_flat.get(k) != now_flat.get(k)]
    if not changed:
        return
    parts = [f"{k}={_short(was_flat.get(k))} there, {k}={_short(now_flat.get(k))} here" for k in changed[:4]]
    fix = {
        "threads": f"run with the same thread count (OMP_NUM_THREADS={saved.get('threads')})",
        "effdl": "resume with the effdl version that started it",
        "torch": "resume with the same torch version",
    }
    advice = next((fix[k] for k in changed if k in fix), f"resume with the same {', '.join(changed[:4])}")
    raise RunDirError(
        f"cannot resume {path}: it was written with other inputs or settings ({'; '.join(parts)}); {advice}, or "
        "start over in a fresh folder (restart)"
    )


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"config": {"lr": 1}, "steps": [{"ratio": 0.5}]}`` -> ``{"config.lr": 1, "steps.0.ratio": 0.5}`` (so
    that a refusal names the very setting)."""
    if isinstance(d, list) and prefix:
        d = {str(i): v for i, v in enumerate(d)} | {"length": len(d)}
    if not isinstance(d, dict) or (prefix and not d):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def _read_marker(path: Path) -> dict[str, Any] | None:
    file = path / MARKER_DIR / _RUN
    if not file.is_file():
        return None
    try:
        marker = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(
            f"{file} is corrupt ({exc}); effdl cannot tell which run wrote {path}: choose another --out, or "
            f"delete {file} if the folder holds nothing you need"
        ) from exc
    if not isinstance(marker, dict) or marker.get("format") != "effdl.run":
        raise RunDirError(f"{file} is not an effdl run marker; choose another --out")
    return marker


def _read_log(path: Path) -> list[str]:
    file = path / MARKER_DIR / _FILES
    if not file.is_file():
        return []
    seen: dict[str, None] = {}
    for line in file.read_text(errors="replace").splitlines():
        if line and not line.startswith("/") and ".." not in Path(line).parts:
            seen.setdefault(line, None)
    return list(seen)


def _clean(path: Path) -> None:
    """Deletes the files the earlier run wrote (from its log; a file replaced by a link or folder is kept) and the
    folders left empty by that."""
    root = path.resolve()
    removed = 0
    folders: set[Path] = set()
    for rel in _read_log(path):
        file = path / rel
        if file.is_symlink() or not file.is_file() or not file.resolve().is_relative_to(root):
            continue
        file.unlink()
        removed += 1
        folders.update(p for p in file.parents if p.resolve().is_relative_to(root) and p.resolve() != root)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: a user's file in it keeps it
    if removed:
        log.info("removed %d files of the earlier run in %s", removed, path)


def _remove_stale_tmp(path: Path) -> None:
    """Temporary files of atomic writes a killed run left behind (in the folder and the folders it wrote to)."""
    folders = {path} | {(path / rel).parent for rel in _read_log(path)}
    for folder in folders:
        if not folder.is_dir() or folder.is_symlink():
            continue
        for entry in folder.iterdir():
            if _TMP.match(entry.name) and entry.is_file() and not entry.is_symlink():
                entry.unlink(missing_ok=True)


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
