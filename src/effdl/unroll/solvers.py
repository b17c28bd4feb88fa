"""The common interface of every sparse solver in :mod:`effdl.unroll`, and the classical baselines ISTA and FISTA.

A solver maps measurements ``b`` (``(batch, m)``) to a sequence of estimates ``x^1, x^2, ...`` (``(batch, n)``),
one per iteration or layer, starting from ``x^0 = 0``. Learned (unrolled) solvers have a fixed number of layers,
each with its own parameters; the classical ones run for as many iterations as asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from effdl.core.config import check_range
from effdl.core.errors import ConfigError, UnsupportedError
from effdl.core.registry import Registry
from effdl.unroll.problem import check_dictionary, check_measurements
from effdl.unroll.shrink import soft_threshold

__all__ = ["FISTA", "ISTA", "SOLVERS", "UnrolledSolver", "lipschitz"]

SOLVERS: Registry[type[UnrolledSolver]] = Registry("sparse solver")


def lipschitz(A: torch.Tensor) -> float:
    """``L = ||A||_2^2``, the Lipschitz constant of the gradient of ``||A x - b||^2 / 2`` (ISTA's step is 1/L).

    Example:
        >>> round(lipschitz(2 * torch.eye(3)), 4)
        4.0
    """
    return float(torch.linalg.matrix_norm(A.double(), ord=2) ** 2)


class UnrolledSolver(nn.Module):
    """Base class: holds the dictionary ``A`` as a buffer and runs iterations.

    Subclasses implement :meth:`steps`; learned ones keep one module per layer in ``self.layers`` and return their
    constructor options from :meth:`options` so that a checkpoint can rebuild them.

    Args:
        A: the dictionary ``(m, n)``; columns need not be normalized but none may be zero.
        layers: the number of layers (learned solvers) or the default number of iterations (classical ones).
    """

    method: ClassVar[str] = ""
    learned: ClassVar[bool] = True

    def __init__(self, A: torch.Tensor, layers: int) -> None:
        super().__init__()
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ConfigError(f"layers must be a positive integer, got layers={layers!r}; use layers=16")
        self.register_buffer("A", check_dictionary(A).clone())
        self.num_layers = layers

    @property
    def m(self) -> int:
        """Rows of ``A``."""
        return self.A.shape[0]

    @property
    def n(self) -> int:
        """Columns of ``A``."""
        return self.A.shape[1]

    def options(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this solver together with ``A`` and ``layers``."""
        return {}

    def layer_parameters(self, k: int) -> list[nn.Parameter]:
        """The trainable parameters of layer ``k`` (0-based); empty for solvers without per-layer parameters."""
        layers = getattr(self, "layers", None)
        if layers is None:
            return []
        return list(layers[k].parameters())

    def _depth(self, depth: int | None) -> int:
        depth = self.num_layers if depth is None else depth
        if depth < 0 or (self.learned and depth > self.num_layers):
            limit = f"0..{self.num_layers}" if self.learned else ">= 0"
            raise ConfigError(f"depth must be in {limit} for this {self.method} solver, got depth={depth}")
        return depth

    def steps(self, b: torch.Tensor, depth: int | None = None) -> Iterator[torch.Tensor]:
        """Yields ``x^1, ..., x^depth`` for measurements ``b`` (``(batch, m)``)."""
        raise UnsupportedError(f"{type(self).__name__} must implement steps(b, depth)")

    def iterates(self, b: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        """All estimates ``[x^1, ..., x^depth]`` as a list."""
        return list(self.steps(b, depth))

    def forward(self, b: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """The estimate after ``depth`` layers (all of them by default)."""
        x = None
        for x in self.steps(b, depth):  # noqa: B007  (the last iterate is the output)
            pass
        if x is None:
            b = check_measurements(b, self.m)
            return b.new_zeros(b.shape[0], self.n)
        return x

    def _start(self, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = check_measurements(b, self.m).to(self.A.dtype)
        return b, b.new_zeros(b.shape[0], self.n)


@SOLVERS.register("ista", description="ISTA: x <- soft(x - A^T(Ax - b)/L, lam/L)", learned=False)
class ISTA(UnrolledSolver):
    """ISTA for the LASSO ``min ||A x - b||^2 / 2 + lam ||x||_1`` with step ``1/L`` and threshold ``lam/L``.

    Args:
        A: the dictionary.
        layers: default number of iterations.
        lam: the LASSO weight ``lam``.

    Example:
        >>> from effdl.unroll.problem import make_problem, nmse_db
        >>> p = make_problem(m=40, n=80)
        >>> b, x = p.sample(16, seed=0)
        >>> ista = ISTA(p.A, 500, lam=0.01)
        >>> nmse_db(ista(b), x) < nmse_db(ista(b, depth=10), x)
        True
    """

    method = "ista"
    learned = False

    def __init__(self, A: torch.Tensor, layers: int = 16, *, lam: float = 0.1) -> None:
        super().__init__(A, layers)
        check_range("lam", lam, 0.0, low_open=True, hint="use lam=0.1")
        self.lam = float(lam)
        self.L = lipschitz(self.A)

    def options(self) -> dict[str, Any]:
        """``{"lam": ...}``."""
        return {"lam": self.lam}

    def steps(self, b: torch.Tensor, depth: int | None = None) -> Iterator[torch.Tensor]:
        """Yields ISTA's iterates."""
        depth = self._depth(depth)
        b, x = self._start(b)
        for _ in range(depth):
            grad = (x @ self.A.T - b) @ self.A  # (batch, n) = A^T (A x - b)
            x = soft_threshold(x - grad / self.L, self.lam / self.L)
            yield x


@SOLVERS.register("fista", description="FISTA: ISTA with Nesterov momentum (Beck & Teboulle 2009)", learned=False)
class FISTA(ISTA):
    """FISTA (Beck & Teboulle 2009): ISTA's step taken at an extrapolated point, with ``t_{k+1} =
    (1 + sqrt(1 + 4 t_k^2)) / 2``.

    Example:
        >>> from effdl.unroll.problem import make_problem, nmse_db
        >>> p = make_problem(m=40, n=80)
        >>> b, x = p.sample(16, seed=0)
        >>> nmse_db(FISTA(p.A, lam=0.01)(b, 50), x) < nmse_db(ISTA(p.A, lam=0.01)(b, 50), x)
        True
    """

    method = "fista"

    def steps(self, b: torch.Tensor, depth: int | None = None) -> Iterator[torch.Tensor]:
        """Yields FISTA's iterates."""
        depth = self._depth(depth)
        b, x = self._start(b)
        y, t = x, 1.0
        for _ in range(depth):
            grad = (y @ self.A.T - b) @ self.A
            x_next = soft_threshold(y - grad / self.L, self.lam / self.L)
            t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
            y = x_next + ((t - 1) / t_next) * (x_next - x)
            x, t = x_next, t_next
            yield x
