"""Thresholding operators of ISTA-type networks (pure functions).

``soft_threshold`` is the proximal map of ``theta ||x||_1``. ``support_select`` is the thresholding with support
selection of LISTA-CPSS (Chen et al. 2018, eq. 11): the largest entries of each row, those that the threshold would
keep anyway, bypass the shrinkage, which removes the bias of soft thresholding on the recovered support.
"""

from __future__ import annotations

import torch

from effdl.core.config import check_range
from effdl.core.errors import ShapeError

__all__ = ["soft_threshold", "support_schedule", "support_select"]


def soft_threshold(v: torch.Tensor, theta: torch.Tensor | float) -> torch.Tensor:
    """``sign(v) * max(|v| - theta, 0)``; ``theta`` is a scalar or broadcasts against ``v`` (e.g. ``(batch, 1)``).

    Example:
        >>> soft_threshold(torch.tensor([-2.0, 0.5, 3.0]), 1.0).tolist()
        [-1.0, 0.0, 2.0]
    """
    return torch.sign(v) * torch.relu(v.abs() - theta)


def support_select(v: torch.Tensor, theta: torch.Tensor | float, fraction: float | torch.Tensor) -> torch.Tensor:
    """Soft thresholding except for the ``fraction * n`` largest-magnitude entries of each row of ``v``
    (``(batch, n)``) that exceed ``theta``: those pass unchanged.

    ``fraction`` is a number (the same for every row) or a ``(batch,)`` tensor (one per row, as HyperLISTA sets
    it). Which entries bypass is not differentiated through (a mask, as in the paper's code).

    Example:
        >>> v = torch.tensor([[3.0, -2.0, 0.5, 1.5]])
        >>> support_select(v, 1.0, 0.5).tolist()  # the 2 largest keep their value
        [[3.0, -2.0, 0.0, 0.5]]
    """
    if v.dim() != 2:
        raise ShapeError(f"support_select expects a (batch, n) tensor, got shape {tuple(v.shape)}")
    n = v.shape[1]
    magnitude = v.abs()
    shrunk = torch.sign(v) * torch.relu(magnitude - theta)
    with torch.no_grad():
        if isinstance(fraction, torch.Tensor):
            count = (fraction.reshape(-1, 1).clamp(0, 1) * n).floor().long()  # (batch, 1)
            ordered = magnitude.sort(dim=1, descending=True).values
            cutoff = ordered.gather(1, (count - 1).clamp(min=0))
            keep = (magnitude >= cutoff) & (count > 0)
        else:
            count = int(fraction * n)
            if count <= 0:
                return shrunk
            cutoff = magnitude.topk(min(count, n), dim=1).values[:, -1:]
            keep = magnitude >= cutoff
        keep = keep & (magnitude > theta)
    return torch.where(keep, v, shrunk)


def support_schedule(layers: int, per_layer: float = 0.012, maximum: float = 0.13) -> list[float]:
    """Fractions ``p_k = min(k * per_layer, maximum)``, k = 1..layers, of LISTA-CPSS (1.2% and 13% in the paper).

    Example:
        >>> [round(p, 3) for p in support_schedule(4, 0.05, 0.12)]
        [0.05, 0.1, 0.12, 0.12]
    """
    check_range("per_layer", per_layer, 0.0, 1.0, hint="use per_layer=0.012 (1.2% more entries per layer)")
    check_range("maximum", maximum, 0.0, 1.0, hint="use maximum=0.13")
    return [min((k + 1) * per_layer, maximum) for k in range(layers)]
