"""Mutual coherence and ALISTA's analytic weight matrix (Liu, Chen, Wang & Yin, ICLR 2019).

ALISTA picks ``W`` to minimize the generalized coherence with ``A``, relaxed to the Frobenius norm:
``min_W sum_{i != j} (w_i^T a_j)^2  s.t.  w_i^T a_i = 1`` (their eq. 16). The problem separates over columns:
``sum_{j != i} (w_i^T a_j)^2 = w_i^T A A^T w_i - 1`` under the constraint, so each column is a Lagrange solution,
``w_i = (A A^T)^{-1} a_i / (a_i^T (A A^T)^{-1} a_i)``, which this module computes in closed form rather than by the
paper's projected gradient descent.
"""

from __future__ import annotations

import torch

from effdl.core.errors import ShapeError
from effdl.unroll.problem import check_dictionary

__all__ = ["analytic_weight", "mutual_coherence"]


def analytic_weight(A: torch.Tensor, *, ridge: float = 0.0) -> torch.Tensor:
    """ALISTA's weight ``W`` (same shape as ``A``) with ``diag(W^T A) = 1`` and minimal Frobenius coherence.

    Args:
        A: the dictionary, ``(m, n)``.
        ridge: added to the diagonal of ``A A^T`` (relative to its mean eigenvalue) for rank-deficient dictionaries.

    Example:
        >>> from effdl.unroll.problem import gaussian_dictionary
        >>> A = gaussian_dictionary(30, 60, seed=0)
        >>> W = analytic_weight(A)
        >>> bool(torch.allclose((W * A).sum(0), torch.ones(60), atol=1e-5))
        True
        >>> mutual_coherence(A, W) < mutual_coherence(A)
        True
    """
    A = check_dictionary(A)
    dtype, A = A.dtype, A.double()
    gram = A @ A.T  # (m, m)
    if ridge:
        gram = gram + ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
    rank = torch.linalg.matrix_rank(gram).item()
    if rank < gram.shape[0]:
        raise ShapeError(
            f"A A^T is singular (rank {rank} < m={gram.shape[0]}): the rows of A are linearly dependent; "
            "drop redundant measurements or pass ridge=1e-6"
        )
    solved = torch.linalg.solve(gram, A)  # (m, n) = (A A^T)^{-1} A
    scale = (solved * A).sum(dim=0)  # a_i^T (A A^T)^{-1} a_i > 0
    return (solved / scale).to(dtype)


def mutual_coherence(A: torch.Tensor, W: torch.Tensor | None = None) -> float:
    """``max_{i != j} |w_i^T a_j|``: with ``W=None`` the coherence of ``A``'s normalized columns, otherwise the
    generalized coherence of ``W`` with ``A`` (``W``'s columns scaled so that ``w_i^T a_i = 1``).

    Example:
        >>> mutual_coherence(torch.eye(3))
        0.0
    """
    A = check_dictionary(A).double()
    if W is None:
        An = A / A.norm(dim=0, keepdim=True)
        cross = An.T @ An
    else:
        if W.shape != A.shape:
            raise ShapeError(f"W must have the shape of A {tuple(A.shape)}, got {tuple(W.shape)}")
        W = W.double()
        diag = (W * A).sum(dim=0)
        if (diag.abs() < 1e-12).any():
            raise ShapeError("some w_i is orthogonal to a_i (w_i^T a_i = 0); W cannot be normalized against A")
        cross = (W / diag).T @ A  # (n, n), unit diagonal
    cross.fill_diagonal_(0.0)
    return float(cross.abs().max())
