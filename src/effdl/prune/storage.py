"""Compact storage for sparse weights: a bitmap of the kept positions (1 bit per weight) plus the kept values, so
the file shrinks with sparsity (at 90% sparsity a float32 tensor takes 0.1 * 4 + 1/8 = 0.525 bytes per weight
instead of 4). Tensors denser than the break-even point stay dense."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effdl.core.checkpoint import load_checkpoint, save_checkpoint
from effdl.core.errors import CheckpointError

__all__ = ["load_sparse_state_dict", "pack_sparse", "save_sparse", "unpack_sparse"]

_VALUES, _BITMAP = "::values", "::bitmap"


def pack_sparse(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bitmap, values)``: packed bits of ``t != 0`` (uint8, row-major) and the non-zero values in order.

    Example:
        >>> bitmap, values = pack_sparse(torch.tensor([0.0, 2.0, 0.0, 3.0]))
        >>> values.tolist(), unpack_sparse(bitmap, values, (4,)).tolist()
        ([2.0, 3.0], [0.0, 2.0, 0.0, 3.0])
    """
    flat = t.detach().flatten()
    keep = flat != 0
    bits = np.packbits(keep.numpy().astype(np.uint8))
    return torch.from_numpy(bits), flat[keep].clone()


def unpack_sparse(bitmap: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_sparse`."""
    n = int(np.prod(shape)) if shape else 1
    keep = torch.from_numpy(np.unpackbits(bitmap.numpy(), count=n).astype(bool))
    if int(keep.sum()) != values.numel():
        raise CheckpointError(
            f"sparse tensor is corrupt: its bitmap marks {int(keep.sum())} weights but it holds {values.numel()}"
        )
    out = torch.zeros(n, dtype=values.dtype)
    out[keep] = values
    return out.view(shape)


def save_sparse(
    model: nn.Module | dict[str, torch.Tensor], path: str | os.PathLike, *, meta: dict | None = None
) -> Path:
    """Saves a state_dict with every floating tensor that is sparse enough in bitmap + values form (atomically, as
    safetensors). Load it back with :func:`load_sparse_state_dict`.

    Example:
        >>> import tempfile, pathlib
        >>> m = nn.Linear(100, 100); _ = m.weight.data[:, :90].zero_()
        >>> p = save_sparse(m, pathlib.Path(tempfile.mkdtemp()) / "m.safetensors")
        >>> sd = load_sparse_state_dict(p)
        >>> bool(torch.equal(sd["weight"], m.weight.data))
        True
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for key, t in state.items():
        t = t.detach()
        bits_per = t.element_size() * 8
        density = float((t != 0).float().mean()) if t.numel() else 1.0
        # bitmap (1 bit) + values (density * bits_per) beats dense (bits_per) when density < 1 - 1/bits_per
        if t.is_floating_point() and t.numel() >= 64 and density < 1.0 - 1.0 / bits_per:
            bitmap, values = pack_sparse(t)
            tensors[key + _BITMAP], tensors[key + _VALUES] = bitmap, values
            shapes[key] = list(t.shape)
        else:
            tensors[key] = t.contiguous()
    return save_checkpoint(path, tensors, {"kind": "sparse_state_dict", "sparse_shapes": shapes, **(meta or {})})


def load_sparse_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads a :func:`save_sparse` file back into a dense state_dict."""
    tensors, meta = load_checkpoint(path)
    shapes: dict[str, Any] = meta.get("sparse_shapes", {})
    out = {k: v for k, v in tensors.items() if not k.endswith((_VALUES, _BITMAP))}
    for key, shape in shapes.items():
        if key + _BITMAP not in tensors or key + _VALUES not in tensors:
            raise CheckpointError(f"{path} lists {key} as sparse but lacks its bitmap or values; the file is corrupt")
        out[key] = unpack_sparse(tensors[key + _BITMAP], tensors[key + _VALUES], tuple(shape))
    return out
