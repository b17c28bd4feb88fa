"""Pure low-rank math: truncated SVD factors, energy-based ranks and Tucker-2 (HOSVD) factors of weight tensors.
No modules here; :mod:`effdl.factorize.layers` builds layers from these factors."""

from __future__ import annotations

import torch

from effdl.core.errors import ConfigError

__all__ = ["energy_kept", "energy_rank", "singular_values", "svd_factors", "tucker2_factors"]


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Singular values of a 2D tensor, largest first (computed in float64).

    Example:
        >>> singular_values(torch.diag(torch.tensor([1.0, 3.0])))
        tensor([3., 1.], dtype=torch.float64)
    """
    _check_matrix(matrix)
    return torch.linalg.svdvals(matrix.detach().double())


def energy_kept(values: torch.Tensor, rank: int) -> float:
    """Share of the squared singular values that the first ``rank`` of them hold.

    Example:
        >>> energy_kept(torch.tensor([3.0, 1.0]), 1)
        0.9
    """
    sq = values.double() ** 2
    total = float(sq.sum())
    return 1.0 if total == 0 else round(float(sq[:rank].sum()) / total, 12)


def energy_rank(values: torch.Tensor, energy: float) -> int:
    """The smallest rank whose leading singular values hold at least ``energy`` of the squared total.

    Example:
        >>> energy_rank(torch.tensor([3.0, 1.0, 0.1]), 0.85)
        1
        >>> energy_rank(torch.tensor([3.0, 1.0, 0.1]), 0.95)
        2
    """
    if not 0.0 < energy <= 1.0:
        raise ConfigError(f"energy must be in (0, 1], got energy={energy}; use energy=0.9 to keep 90%")
    sq = values.double() ** 2
    total = float(sq.sum())
    if total == 0:
        return 1
    share = torch.cumsum(sq, 0) / total
    # a tiny tolerance so that energy=1.0 is reached despite float rounding of the cumulative sum
    return int(torch.searchsorted(share, torch.tensor(energy - 1e-12, dtype=share.dtype)).item()) + 1


def svd_factors(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first, second)`` with ``second @ first`` the best rank-``rank`` approximation of ``matrix`` (out, in):
    ``first = sqrt(S) V^T`` (rank, in), ``second = U sqrt(S)`` (out, rank) — the singular values split evenly so
    both factors have similar scales for fine-tuning. Eckart-Young: no rank-r matrix is closer in Frobenius norm.

    Example:
        >>> w = torch.randn(5, 3)
        >>> a, b = svd_factors(w, 3)
        >>> torch.allclose(b @ a, w, atol=1e-5)
        True
    """
    _check_matrix(matrix)
    _check_rank(rank, min(matrix.shape))
    u, s, vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    first = root[:, None] * vh[:rank]  # (rank, in)
    second = u[:, :rank] * root[None, :]  # (out, rank)
    return first.to(matrix.dtype), second.to(matrix.dtype)


def tucker2_factors(
    weight: torch.Tensor, rank_out: int, rank_in: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tucker-2 decomposition of a convolution kernel ``(out, in, *k)`` by HOSVD of its two channel modes:
    ``weight ~ core x_0 u_out x_1 u_in`` with ``u_out`` (out, rank_out), ``u_in`` (in, rank_in) orthonormal and
    ``core = weight x_0 u_out^T x_1 u_in^T`` (rank_out, rank_in, *k) (Kim et al., ICLR 2016). Returns
    ``(u_in, core, u_out)``: the 1x1 conv in -> rank_in, the core conv, the 1x1 conv rank_out -> out.

    Example:
        >>> w = torch.randn(4, 3, 3, 3)
        >>> u_in, core, u_out = tucker2_factors(w, 4, 3)
        >>> rebuilt = torch.einsum("oa,abhw,ib->oihw", u_out, core, u_in)
        >>> torch.allclose(rebuilt, w, atol=1e-5)
        True
    """
    if weight.dim() < 3:
        raise ConfigError(f"Tucker-2 needs a convolution kernel (out, in, *k), got shape {tuple(weight.shape)}")
    out_ch, in_ch = weight.shape[:2]
    k = weight[0, 0].numel()
    _check_rank(rank_out, min(out_ch, in_ch * k), "rank_out")
    _check_rank(rank_in, min(in_ch, out_ch * k), "rank_in")
    w = weight.detach().double()
    u_out = torch.linalg.svd(w.reshape(out_ch, -1), full_matrices=False)[0][:, :rank_out]  # (out, r_out)
    u_in = torch.linalg.svd(w.transpose(0, 1).reshape(in_ch, -1), full_matrices=False)[0][:, :rank_in]  # (in, r_in)
    core = torch.einsum("oi...,oa,ib->ab...", w, u_out, u_in)  # (r_out, r_in, *k)
    return u_in.to(weight.dtype), core.to(weight.dtype), u_out.to(weight.dtype)


def _check_matrix(matrix: torch.Tensor) -> None:
    if matrix.dim() != 2:
        raise ConfigError(f"expected a 2D weight matrix, got shape {tuple(matrix.shape)}; reshape conv kernels first")


def _check_rank(rank: int, full: int, name: str = "rank") -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= full:
        raise ConfigError(f"{name} must be an integer in [1, {full}] for this layer, got {name}={rank!r}")
