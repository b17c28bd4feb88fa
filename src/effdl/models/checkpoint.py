"""Saving and loading whole models: weights plus the spec that rebuilds the architecture."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from effdl.core.checkpoint import load_checkpoint, save_checkpoint
from effdl.core.errors import CheckpointError
from effdl.models.base import create_model, model_spec

__all__ = ["load_model", "model_from_spec", "restore_structure_", "save_model"]


def save_model(model: nn.Module, path: str | os.PathLike, *, meta: dict[str, Any] | None = None) -> Path:
    """Saves ``model``'s state_dict and build spec (if made by ``create_model``) to a safetensors file, atomically.

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
    meta = {"kind": "model", "model": model_spec(model), **(meta or {})}
    if getattr(model, "effdl_structure", None) == "pruned":
        meta["structure"] = "pruned"  # shapes differ from the spec's; load_model resizes a fresh model to them
    if getattr(model, "effdl_factorization", None):
        meta["factorization"] = model.effdl_factorization  # load_model rebuilds the same low-rank layers
    if getattr(model, "effdl_quantization", None):
        meta["quantization"] = model.effdl_quantization  # load_model swaps in the same fake-quant layers
    return save_checkpoint(path, model.state_dict(), meta)


def load_model(
    path: str | os.PathLike, *, model: nn.Module | str | None = None, trust_pickle: bool = False
) -> nn.Module:
    """Loads a model from a checkpoint, rebuilding its architecture from the saved spec.

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
    restore_structure_(target, meta, tensors)
    quantized = bool(meta.get("quantization"))
    if quantized:  # a fake-quant model (QAT / simulated PTQ); quant sits above models, hence the lazy import
        from effdl.quant.api import restore_quantized_

        restore_quantized_(target, meta["quantization"])
    _load_state(target, tensors, path, check_shapes=not quantized)
    return target.eval()


def restore_structure_(model: nn.Module, meta: dict[str, Any], shapes: dict[str, Any]) -> None:
    """Gives a freshly built model the structure of a saved one: its low-rank layers (``meta["factorization"]``)
    and, after structured pruning (``meta["structure"] == "pruned"``), the tensor shapes in ``shapes`` (name ->
    tensor). Lazy imports: models sit below factorize and prune, and only such checkpoints need them."""
    if meta.get("factorization"):
        from effdl.factorize.api import restore_factorized_

        restore_factorized_(model, meta["factorization"])
    if meta.get("structure") == "pruned":
        from effdl.prune.surgery import resize_to_state_dict_

        resize_to_state_dict_(model, shapes)
        model.effdl_structure = "pruned"


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


def _load_state(model: nn.Module, tensors: dict, path, *, check_shapes: bool = True) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if check_shapes and k in tensors and tensors[k].shape != own[k].shape
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
