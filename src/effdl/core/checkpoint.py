"""Safe checkpoint files: tensors in safetensors with effdl's JSON metadata in the same file's header.

A checkpoint is one file written atomically, so a crash never leaves a half-written one behind; a JSON copy of
the metadata is written beside it for people. Pickle files (``torch.save``) can run code when loaded and are
refused unless the caller passes ``trust_pickle=True``, and even then only tensors are unpickled
(``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

from effdl.core.errors import CheckpointError, UnsafeCheckpointError
from effdl.core.io import atomic_write_bytes, atomic_write_json

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "load_checkpoint",
    "read_metadata",
    "save_checkpoint",
    "tensors_digest",
]

CHECKPOINT_FORMAT = "effdl.checkpoint"
CHECKPOINT_VERSION = 1
_META_KEY = "effdl"
_DIGEST_KEY = "sha256"
_PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt"}
_MAX_HEADER = 100 * 1024 * 1024


def save_checkpoint(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None
) -> Path:
    """Writes ``tensors`` and JSON-able ``meta`` to ``path`` (a ``.safetensors`` file) atomically.

    Tied (shared) tensors are stored once per name. A ``<path>.json`` copy of the metadata is written beside it.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
        >>> _ = save_checkpoint(p, {"w": torch.ones(2)}, {"note": "demo"})
        >>> t, m = load_checkpoint(p)
        >>> t["w"].tolist(), m["note"]
        ([1.0, 1.0], 'demo')
    """
    from safetensors.torch import save

    path = Path(path)
    plain = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    full_meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **(meta or {}),
                 _DIGEST_KEY: tensors_digest(plain)}  # fmt: skip
    try:
        header_meta = {_META_KEY: json.dumps(full_meta)}
    except TypeError as exc:
        raise CheckpointError(f"checkpoint metadata must be JSON-serializable: {exc}") from exc
    atomic_write_bytes(path, save(plain, metadata=header_meta))
    atomic_write_json(path.with_name(path.name + ".json"), full_meta)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Reads only the effdl metadata of a safetensors checkpoint (cheap: the tensors are not loaded).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
        >>> _ = save_checkpoint(p, {"w": torch.ones(1)}, {"step": 3})
        >>> read_metadata(p)["step"]
        3
    """
    path = _existing(path)
    header = _read_header(path)
    return _parse_meta(path, header)


def load_checkpoint(
    path: str | os.PathLike, *, trust_pickle: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Loads ``(tensors, metadata)`` from a checkpoint, checking its integrity first.

    Args:
        path: a ``.safetensors`` file written by effdl (or any safetensors file), or a pickle file.
        trust_pickle: allow a ``torch.save`` pickle file; only tensors and plain containers are unpickled.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, or not a checkpoint.
        UnsafeCheckpointError: a pickle file was given without ``trust_pickle=True``.
    """
    path = _existing(path)
    with path.open("rb") as fh:
        magic = fh.read(8)
    if _looks_like_pickle(path, magic):
        if not trust_pickle:
            raise UnsafeCheckpointError(
                f"{path} is a pickle file (torch.save); loading pickle can execute arbitrary code. If you trust its "
                "source, pass trust_pickle=True (CLI: --trust-pickle), which unpickles tensors only "
                "(weights_only=True); better, convert it once to safetensors with effdl.core.save_checkpoint"
            )
        return _load_pickle(path), {}
    header = _read_header(path)
    meta = _parse_meta(path, header)
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated ({exc}); restore it from a copy or rewrite it") from exc
    expected = meta.get(_DIGEST_KEY)
    if expected is not None and tensors_digest(tensors) != expected:
        raise CheckpointError(
            f"{path} is corrupt: its tensors do not match the checksum written with them (the file changed after "
            "it was saved: a bad copy, disk or edit); restore it from a copy or rewrite it"
        )
    return tensors, meta


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (in name order): the checksum effdl writes
    into every checkpoint's metadata and checks when loading it.

    Example:
        >>> a = tensors_digest({"w": torch.zeros(2)})
        >>> a == tensors_digest({"w": torch.zeros(2)}), a == tensors_digest({"w": torch.tensor([0.0, 1e-30])})
        (True, False)
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file); check the path")
    return path


def _looks_like_pickle(path: Path, magic: bytes) -> bool:
    if magic.startswith(b"PK\x03\x04"):
        return True  # zip container of torch.save
    if _plausible_safetensors(path, magic):
        return False  # (a header size whose low byte is 0x80 must not pass for a pickle opcode)
    if magic[:1] == b"\x80":
        return True  # a raw pickle stream (protocol >= 2)
    return path.suffix.lower() in _PICKLE_SUFFIXES


def _plausible_safetensors(path: Path, magic: bytes) -> bool:
    """An 8-byte little-endian header size that fits the file, followed by a JSON object."""
    if len(magic) < 8:
        return False
    (n,) = struct.unpack("<Q", magic)
    if not 0 < n <= path.stat().st_size - 8:
        return False
    with path.open("rb") as fh:
        fh.seek(8)
        return fh.read(1) == b"{"


def _read_header(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path} is truncated ({size} bytes): not a safetensors checkpoint")
        (n,) = struct.unpack("<Q", raw)
        if n == 0 or n > min(size - 8, _MAX_HEADER):
            raise CheckpointError(
                f"{path} is corrupt or truncated: its header claims {n} bytes but the file has {size}; "
                "it is not a valid safetensors checkpoint"
            )
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path} has a corrupt header ({exc}); it is not a valid checkpoint") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt header (not a JSON object)")
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path} is truncated: its tensors need {8 + n + end} bytes but the file has {size}; "
            "the write was interrupted or the copy is incomplete"
        )
    return header


def _parse_meta(path: Path, header: dict[str, Any]) -> dict[str, Any]:
    raw = (header.get("__metadata__") or {}).get(_META_KEY)
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} has corrupt effdl metadata ({exc})") from exc
    version = meta.get("version", CHECKPOINT_VERSION)
    if meta.get("format") == CHECKPOINT_FORMAT and int(version) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer effdl (checkpoint version {version} > {CHECKPOINT_VERSION}); "
            "upgrade effdl to read it"
        )
    return meta


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} could not be loaded as a tensors-only pickle ({type(exc).__name__}: {exc}); "
            "only state_dicts of tensors are accepted"
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state_dict (a dict of tensor names to tensors)")
    return dict(obj)
