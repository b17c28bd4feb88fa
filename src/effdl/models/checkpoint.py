"""Saving and loading whole models: weights plus the spec that rebuilds the architecture."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effdl.core.checkpoint import load_checkpoint, save_checkpoint
from effdl.core.errors import CheckpointError
from effdl.models.base import create_model, model_spec
from effdl.models.structure import describe_structure, restore_structure_

__all__ = [
    "check_spec",
    "checkpoint_structure",
    "load_model",
    "model_from_spec",
    "save_model",
    "structure_records",
]

log = logging.getLogger(__name__)


def save_model(model: nn.Module, path: str | os.PathLike, *, meta: dict[str, Any] | None = None) -> Path:
    """Saves ``model``'s state_dict, its build spec (if made by ``create_model``) and the records of what
    transforms did to its structure (see :mod:`effdl.models.structure`) to a safetensors file, atomically.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from effdl.models import create_model
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
        >>> m = create_model("test_mlp")
        >>> _ = save_model(m, p)
        >>> m2 = load_model(p)
        >>> x = torch.randn(2, 1, 40); bool((m(x) == m2(x)).all())
        True
    """
    meta = {"kind": "model", "model": model_spec(model), "structure": structure_records(model), **(meta or {})}
    return save_checkpoint(path, model.state_dict(), meta)


def structure_records(model: nn.Module) -> list[dict[str, Any]]:
    """The structure records of ``model`` (what :func:`load_model` replays on a fresh model): compared with a
    model built from its spec when it has one.

    Example:
        >>> from effdl.models import create_model
        >>> structure_records(create_model("test_mlp"))
        []
    """
    spec = model_spec(model)
    reference = model_from_spec(spec) if spec else None
    return describe_structure(model, reference)


def load_model(
    path: str | os.PathLike, *, model: nn.Module | str | None = None, trust_pickle: bool = False
) -> nn.Module:
    """Loads a model from a checkpoint, rebuilding its architecture from the saved spec and structure records.

    Args:
        path: a file written by :func:`save_model` or a training run, or a plain state_dict file.
        model: a module to load the weights into, or a registered model name; needed when the checkpoint has no
            spec (e.g. a state_dict from elsewhere).
        trust_pickle: accept a ``torch.save`` pickle (loaded tensors-only).

    Returns:
        The model, in eval mode.

    Raises:
        CheckpointError: unreadable file, no way to rebuild the model, or weights that do not fit it.
    """
    tensors, meta = load_checkpoint(path, trust_pickle=trust_pickle)
    spec = meta.get("model")
    if spec is not None and not isinstance(model, nn.Module):
        check_spec(spec, tensors, path)
    if isinstance(model, nn.Module):
        target = model
    elif isinstance(model, str):
        same = bool(spec) and spec.get("name") == model.lower()
        target = create_model(model, **(_build_args(spec) if same else {}))
    elif spec:
        target = model_from_spec(spec)
    else:
        raise CheckpointError(
            f"{path} holds weights but no model spec; pass model=NAME or a module (CLI: --model NAME) to load it"
        )
    records = checkpoint_structure(meta, tensors)
    restore_structure_(target, records)
    _load_state(target, tensors, path)
    return target.eval()


def checkpoint_structure(meta: dict[str, Any], tensors: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The structure records of a checkpoint's metadata; checkpoints written before the records existed (keys
    ``factorization``, ``structure: pruned``, ``quantization``, ``float_shapes``) are read as records too.

    Example:
        >>> checkpoint_structure({"factorization": {"fc": {"kind": "svd", "ranks": [2]}}})
        [{'kind': 'factorized', 'layers': {'fc': {'kind': 'svd', 'ranks': [2]}}}]
    """
    records = meta.get("structure")
    if isinstance(records, list):
        return records
    legacy: list[dict[str, Any]] = []  # effdl checkpoints of version 1, before structure records
    if meta.get("factorization"):
        legacy.append({"kind": "factorized", "layers": meta["factorization"]})
    if records == "pruned":
        shapes = meta.get("float_shapes") or {k: list(v.shape) for k, v in (tensors or {}).items()}
        legacy.append({"kind": "shapes", "shapes": shapes})
    if meta.get("quantization"):
        legacy.append({"kind": "fake-quant", "config": meta["quantization"]})
    return legacy


def _build_args(spec: dict[str, Any]) -> dict[str, Any]:
    return {"input_shape": spec["input_shape"], "num_classes": spec["num_classes"], **spec.get("kwargs", {})}


def model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """A fresh model built from a saved :func:`~effdl.models.model_spec`.

    Example:
        >>> from effdl.models import create_model, model_spec
        >>> type(model_from_spec(model_spec(create_model("mlp")))).__name__
        'MLP'
    """
    return create_model(spec["name"], **_build_args(spec))


#: bounds on what a checkpoint's model spec may ask for before anything is built: integers (widths, depths) and
#: list lengths; and the elements of the model it describes, against those of the tensors stored with it
MAX_SPEC_INT, MAX_SPEC_LIST, MAX_GROWTH = 1 << 20, 1024, 64


def check_spec(spec: Any, tensors: dict[str, torch.Tensor], path: Any = "checkpoint") -> None:
    """Refuses a model spec that is malformed or asks for far more than its file holds, before the model is built
    (a small untrusted file must not make effdl allocate gigabytes): every integer at most ``MAX_SPEC_INT``, every
    list at most ``MAX_SPEC_LIST`` long, and the model (built on the meta device: no memory) at most
    ``MAX_GROWTH`` times the elements stored in the file (pruned or factorized files are smaller than the spec's
    model) plus ten million.

    Example:
        >>> check_spec({"name": "mlp", "input_shape": [1, 40], "num_classes": 10, "kwargs": {"hidden": [10**7]}}, {})
        Traceback (most recent call last):
        ...
        effdl.core.errors.CheckpointError: checkpoint has a model spec with an integer 10000000 (over 1048576)...
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise CheckpointError(f"{path} has a malformed model spec (no model name); it is corrupt or not from effdl")
    if not isinstance(spec.get("kwargs", {}), dict) or not isinstance(spec.get("input_shape", []), list | tuple):
        raise CheckpointError(f"{path} has a malformed model spec (kwargs/input_shape of the wrong type)")
    for value in _leaves(spec):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SPEC_INT:
            raise CheckpointError(
                f"{path} has a model spec with an integer {value} (over {MAX_SPEC_INT}): refused before building; "
                "the file is corrupt or not from a trusted source"
            )
        if isinstance(value, list) and len(value) > MAX_SPEC_LIST:
            raise CheckpointError(f"{path} has a model spec with a list of {len(value)} items: refused")
    stored = sum(t.numel() for t in tensors.values())
    try:
        with torch.device("meta"):
            probe = model_from_spec(spec)
    except Exception as exc:  # noqa: BLE001 - the real build below reports it with its own message
        log.debug("meta-device build of %s failed (%s); the size check is skipped", spec.get("name"), exc)
        return
    wanted = sum(t.numel() for t in probe.state_dict().values())
    if wanted > MAX_GROWTH * stored + 10_000_000:
        raise CheckpointError(
            f"{path} asks for a {spec['name']} of {wanted:,} elements but stores only {stored:,}: refused before "
            "building it; the spec does not belong to these weights (corrupt or untrusted file)"
        )


def _leaves(obj: Any):
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _leaves(v)


def _load_state(model: nn.Module, tensors: dict, path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in tensors and tensors[k].shape != own[k].shape and own[k].numel() > 0  # empty: sized on load (lazy)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append(f"shape mismatch {'; '.join(wrong[:5])}")
        raise CheckpointError(
            f"{path} does not fit the model ({'; '.join(parts)}); check that --model and its options match the "
            "checkpoint"
        )
    model.load_state_dict(tensors, strict=True)
