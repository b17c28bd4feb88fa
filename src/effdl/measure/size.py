"""Parameter counts and serialized size."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_nonzero_params", "count_params", "serialized_size"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (each shared parameter counted once).

    Example:
        >>> count_params(nn.Linear(4, 2))
        10
    """
    return sum(p.numel() for p in model.parameters())


def count_nonzero_params(model: nn.Module) -> int:
    """Number of parameters that are not exactly zero (what unstructured pruning removes).

    Example:
        >>> lin = nn.Linear(4, 2)
        >>> with torch.no_grad():
        ...     _ = lin.weight[0].zero_()
        >>> count_nonzero_params(lin)
        6
    """
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def serialized_size(model: nn.Module) -> int:
    """Bytes of the model's state_dict written as safetensors, the format effdl saves models in.

    Example:
        >>> serialized_size(nn.Linear(4, 2)) > 40  # 10 float32 values plus a small header
        True
    """
    from safetensors.torch import save

    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    return len(save(state))
