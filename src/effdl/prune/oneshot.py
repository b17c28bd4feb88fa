"""One-shot pruning of Linear layers from calibration data, without retraining: Wanda (Sun et al. 2024: weight
magnitude times input-feature norm, compared within each output row) and SparseGPT (Frantar & Alistarh 2023:
an OBS-style mask choice and update of the remaining weights through the inverse Hessian), at a target sparsity,
unstructured or N:M (N of every M consecutive weights of a row kept, e.g. 2:4), layer by layer."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from effdl.core.config import Config, check_range, name_matches
from effdl.core.errors import ConfigError, UnsupportedError
from effdl.measure.activations import inverse_hessian_factor
from effdl.prune.unstructured import check_n_m, n_m_mask

__all__ = [
    "OneShotPruneConfig",
    "SparseGPTConfig",
    "WandaConfig",
    "oneshot_targets",
    "sparsegpt_prune",
    "wanda_mask",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OneShotPruneConfig(Config):
    """Settings shared by the one-shot methods.

    Attributes:
        ratio: fraction of each layer's weights zeroed, in [0, 1).
        n_m: ``(N, M)``: keep N of every M consecutive weights of a row (the pattern sparse tensor cores run);
            the ratio must then be ``1 - N/M``.
        ignore: module names or regexes left dense (e.g. ``("head",)``).
        calibration_batches: batches of calibration data used.
        sequential: collect each layer's inputs after the earlier layers were pruned (as both papers do).
    """

    ratio: float = 0.5
    n_m: tuple[int, int] | None = None
    ignore: tuple[str, ...] = ()
    calibration_batches: int = 8
    sequential: bool = True

    def validate(self) -> None:
        check_range("ratio", self.ratio, 0.0, 1.0, high_open=True, hint="use ratio=0.5 to zero half of the weights")
        check_n_m(self.n_m, self.ratio)
        check_range("calibration_batches", self.calibration_batches, 1, hint="use calibration_batches=8")

    @property
    def method(self) -> str:
        """The method's short name."""
        return type(self).__name__.removesuffix("Config").lower()

    def describe(self) -> str:
        pattern = f"{self.n_m[0]}:{self.n_m[1]}" if self.n_m else f"{self.ratio:.0%}"
        return f"prune {self.method} {pattern}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class WandaConfig(OneShotPruneConfig):
    """Wanda: zero the weights with the smallest ``|W_ij| * ||X_j||_2`` within each output row.

    Example:
        >>> WandaConfig(n_m=(2, 4)).describe()
        'prune wanda 2:4'
    """


@dataclasses.dataclass(frozen=True, kw_only=True)
class SparseGPTConfig(OneShotPruneConfig):
    """SparseGPT: choose the mask by ``w^2 / [H^-1]_jj^2`` in blocks of columns and update the kept weights to
    compensate each removed one.

    Attributes:
        damp: diagonal damping of the Hessian, as a fraction of its mean diagonal.
        block_size: columns per block (the adaptive mask is chosen per block; a multiple of M for N:M).

    Example:
        >>> SparseGPTConfig(ratio=0.6).describe()
        'prune sparsegpt 60%'
    """

    damp: float = 0.01
    block_size: int = 128

    def validate(self) -> None:
        super().validate()
        check_range("damp", self.damp, 0.0, low_open=True, hint="use damp=0.01")
        check_range("block_size", self.block_size, 1, hint="use block_size=128")
        if self.n_m and self.block_size % self.n_m[1]:
            raise ConfigError(f"block_size={self.block_size} must be a multiple of M={self.n_m[1]} for N:M")


def _row_mask(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keeps the highest ``1 - ratio`` of each row (Wanda's per-output comparison group)."""
    drop = int(scores.shape[1] * ratio)
    mask = torch.ones_like(scores, dtype=torch.bool)
    if drop:
        idx = torch.argsort(scores, dim=1, stable=True)[:, :drop]
        mask.scatter_(1, idx, False)
    return mask


def wanda_mask(w: torch.Tensor, feature_norm: torch.Tensor, ratio: float, n_m: tuple[int, int] | None = None):
    """Wanda's mask (True = kept) of ``w`` (out, in) from ``||X_j||_2`` (in,) of the layer's inputs.

    Example:
        >>> w = torch.tensor([[1.0, -1.0, 0.5, 0.5]])
        >>> wanda_mask(w, torch.tensor([1.0, 0.1, 4.0, 1.0]), 0.5).int().tolist()
        [[1, 0, 1, 0]]
    """
    scores = w.detach().abs().float() * feature_norm.float()[None, :]  # (out, in); Sun et al. 2024 eq. 1
    return n_m_mask(scores, *n_m) if n_m else _row_mask(scores, ratio)


def sparsegpt_prune(
    w: torch.Tensor,
    hessian: torch.Tensor,
    ratio: float,
    *,
    n_m: tuple[int, int] | None = None,
    damp: float = 0.01,
    block_size: int = 128,
) -> torch.Tensor:
    """SparseGPT (Frantar & Alistarh 2023, Alg. 1): the pruned and updated weight (out, in), float32.

    Args:
        w: the weight (out, in).
        hessian: ``2 X^T X / n`` of the layer's calibration inputs (in, in).
        ratio: fraction zeroed (unstructured; chosen per block of columns).
        n_m: keep N of every M instead.
        damp: diagonal damping as a fraction of the mean diagonal.
        block_size: columns per block.

    Example:
        >>> _ = torch.manual_seed(0); x = torch.randn(256, 32); w = torch.randn(8, 32)
        >>> h = 2 * x.T @ x / 256
        >>> p = sparsegpt_prune(w, h, 0.5)
        >>> mag = w * _row_mask(w.abs(), 0.5)
        >>> err = lambda v: ((x @ (w - v).T) ** 2).sum()
        >>> float((p == 0).float().mean()), bool(err(p) < err(mag))
        (0.5, True)
    """
    k = w.shape[1]
    W, Hinv = inverse_hessian_factor(w, hessian, damp=damp, method="SparseGPT")
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d = torch.diag(Hinv1)
        if n_m is None:
            scores = W1**2 / d[None, :] ** 2  # OBS saliency w^2 / [H^-1]_jj^2 (eq. 6)
            drop = torch.zeros_like(W1, dtype=torch.bool)
            cut = int(scores.numel() * ratio)
            if cut:
                drop.view(-1)[torch.argsort(scores.flatten(), stable=True)[:cut]] = True
        else:
            drop = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            if n_m is not None and i % n_m[1] == 0:
                n, m = n_m
                block = W1[:, i : i + m] ** 2 / d[None, i : i + m] ** 2
                drop[:, i : i + m] = ~n_m_mask(block, n, m)
            wcol = W1[:, i]
            q = torch.where(drop[:, i], torch.zeros_like(wcol), wcol)
            err = (wcol - q) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]  # compensate in the columns not yet visited
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W


def oneshot_targets(model: nn.Module, ignore: tuple[str, ...]) -> tuple[dict[str, nn.Linear], list[dict[str, Any]]]:
    """The Linear layers one-shot pruning works on, and the other weight layers with the reason they stay dense.

    Example:
        >>> m = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(4, 2))
        >>> layers, dense = oneshot_targets(m, ())
        >>> list(layers), dense
        (['2'], [{'layer': '0', 'reason': 'Conv1d: one-shot pruning covers Linear layers'}])
    """
    layers: dict[str, nn.Linear] = {}
    dense: list[dict[str, Any]] = []
    for name, m in model.named_modules():
        if not name or any(True for _ in m.children()) or not isinstance(getattr(m, "weight", None), nn.Parameter):
            continue
        if isinstance(m, nn.LayerNorm | nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.Embedding):
            continue
        if any(name_matches(name, p) for p in ignore):
            dense.append({"layer": name, "reason": "ignored by the config"})
        elif isinstance(m, nn.Linear):
            layers[name] = m
        else:
            dense.append({"layer": name, "reason": f"{type(m).__name__}: one-shot pruning covers Linear layers"})
    if not layers:
        raise UnsupportedError(
            f"{type(model).__name__} has no Linear layer to prune one-shot (ignore={list(ignore)}); use "
            "MagnitudePruneConfig for Conv layers"
        )
    return layers, dense
