"""Saving and loading whole models: weights plus the spec that rebuilds the architecture."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from effdl.core.checkpoint import load_checkpoint, save_checkpoint
from effdl.core.errors import CheckpointError
from effdl.models.base import create_model, model_spec
from effdl.models.structure import describe_structure, restore_structure_

__all__ = ["checkpoint_structure", "load_model", "model_from_spec", "save_model", "structure_records"]


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
