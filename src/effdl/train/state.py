"""Resumable training state: model, optimizer, scheduler, RNGs, position in the epoch and callback states, all
in one safetensors checkpoint (tensors in the body, the rest as JSON in its header)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from effdl.core.checkpoint import load_checkpoint, save_checkpoint
from effdl.core.errors import CheckpointError

__all__ = ["load_train_state", "save_train_state"]


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                plain.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, values in meta["plain"].items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_train_state(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    position: dict[str, int],
    rng: dict[str, Any],
    callbacks: dict[str, dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes everything needed to continue a run bit-exactly to ``path`` (atomically).

    Example:
        >>> import tempfile, pathlib
        >>> from effdl.core.seed import get_rng_state
        >>> m = torch.nn.Linear(2, 2); opt = torch.optim.Adam(m.parameters())
        >>> sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "last.safetensors"
        >>> _ = save_train_state(p, model=m, optimizer=opt, scheduler=sched, position={"epoch": 1},
        ...                      rng=get_rng_state(), callbacks={})
        >>> load_train_state(p, model=m, optimizer=opt, scheduler=sched)["position"]
        {'epoch': 1}
    """
    opt_tensors, opt_meta = _split_optimizer(optimizer.state_dict())
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(opt_tensors)
    tensors["rng.torch"] = rng["torch"]
    callbacks = _split_tensors(callbacks, "callbacks", tensors)
    meta = {
        "kind": "train_state",
        "position": position,
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict(),
        "rng": {"numpy": rng["numpy"], "python": rng["python"]},
        "callbacks": callbacks,
        **(extra or {}),
    }
    return save_checkpoint(path, tensors, meta)


def load_train_state(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Restores model, optimizer and scheduler in place from a :func:`save_train_state` file and returns the rest
    (``position``, ``rng``, ``callbacks`` and any extra metadata)."""
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != "train_state":
        raise CheckpointError(f"{path} is not a training-state checkpoint (kind={meta.get('kind')!r}); cannot resume")
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
        optimizer.load_state_dict(_join_optimizer(tensors, meta["optimizer"]))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{path} does not match this model or optimizer ({exc}); resume with the same model and settings"
        ) from exc
    scheduler.load_state_dict(meta["scheduler"])
    meta["rng"] = {**meta["rng"], "torch": tensors["rng.torch"]}
    meta["callbacks"] = _join_tensors(meta.get("callbacks", {}), tensors)
    return meta


_TENSOR_REF = "__tensor__"


def _split_tensors(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Moves tensors nested in callback states (e.g. pruning masks) into ``tensors``, leaving references."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().contiguous()
        return {_TENSOR_REF: prefix}
    if isinstance(value, dict):
        return {k: _split_tensors(v, f"{prefix}.{k}", tensors) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(value)]
    return value


def _join_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TENSOR_REF}:
            key = value[_TENSOR_REF]
            if key not in tensors:
                raise CheckpointError(f"the checkpoint refers to tensor {key!r} but does not hold it; it is corrupt")
            return tensors[key]
        return {k: _join_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_tensors(v, tensors) for v in value]
    return value
