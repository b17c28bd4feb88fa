"""LISTA and its coupled variants.

- LISTA (Gregor & LeCun 2010): ``x^{k+1} = soft(W1^k b + W2^k x^k, theta^k)``, every layer's matrices its own.
- LISTA-CP (Chen et al. 2018, eq. 10): the coupling ``W2^k = I - W^k A`` that their Theorem 1 shows necessary for
  convergence, ``x^{k+1} = soft(x^k + W^k (b - A x^k), theta^k)``.
- LISTA-CPSS: LISTA-CP with support selection (their eq. 11): the ``p^k`` largest entries skip the shrinkage, with
  ``p^k = min(k p, p_max)``.

Weights start from ISTA's, ``W1 = A^T / L``, ``W2 = I - A^T A / L`` and ``theta = lam / L``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from effdl.core.config import check_range
from effdl.unroll.shrink import soft_threshold, support_schedule, support_select
from effdl.unroll.solvers import SOLVERS, UnrolledSolver, lipschitz

__all__ = ["LISTA", "LISTACP", "LISTACPSS"]


class _ListaLayer(nn.Module):
    def __init__(self, A: torch.Tensor, L: float, lam: float) -> None:
        super().__init__()
        n = A.shape[1]
        self.W1 = nn.Parameter(A.T.clone() / L)  # (n, m)
        self.W2 = nn.Parameter(torch.eye(n) - A.T @ A / L)  # (n, n)
        self.theta = nn.Parameter(torch.tensor(lam / L))


class _CoupledLayer(nn.Module):
    def __init__(self, A: torch.Tensor, L: float, lam: float) -> None:
        super().__init__()
        self.W = nn.Parameter(A.T.clone() / L)  # (n, m)
        self.theta = nn.Parameter(torch.tensor(lam / L))


@SOLVERS.register("lista", description="LISTA: untied W1, W2 and threshold per layer (Gregor & LeCun 2010)")
class LISTA(UnrolledSolver):
    """LISTA with untied weights.

    Args:
        A: the dictionary ``(m, n)``.
        layers: number of layers K.
        lam: sets the initial thresholds ``lam / L``.

    Example:
        >>> from effdl.unroll.problem import make_problem
        >>> p = make_problem(m=20, n=40)
        >>> net = LISTA(p.A, 3)
        >>> net(p.sample(5, seed=0)[0]).shape, sum(t.numel() for t in net.parameters())
        (torch.Size([5, 40]), 7203)
    """

    method = "lista"

    def __init__(self, A: torch.Tensor, layers: int = 16, *, lam: float = 0.4) -> None:
        super().__init__(A, layers)
        check_range("lam", lam, 0.0, low_open=True, hint="use lam=0.4")
        self.lam = float(lam)
        L = lipschitz(self.A)
        self.layers = nn.ModuleList(_ListaLayer(self.A, L, lam) for _ in range(layers))

    def options(self) -> dict[str, Any]:
        """``{"lam": ...}``."""
        return {"lam": self.lam}

    def steps(self, b: torch.Tensor, depth: int | None = None) -> Iterator[torch.Tensor]:
        """Yields the layers' outputs."""
        depth = self._depth(depth)
        b, x = self._start(b)
        for layer in list(self.layers)[:depth]:
            x = soft_threshold(b @ layer.W1.T + x @ layer.W2.T, layer.theta)
            yield x


@SOLVERS.register("lista-cp", description="LISTA-CP: coupled weights W2 = I - W A (Chen et al. 2018)")
class LISTACP(UnrolledSolver):
    """LISTA with coupled weights, optionally with support selection.

    Args:
        A: the dictionary ``(m, n)``.
        layers: number of layers K.
        lam: sets the initial thresholds ``lam / L``.
        support: use support selection (LISTA-CPSS).
        per_layer: support-selection fraction added per layer (``p``; 1.2% in the paper).
        maximum: its cap (``p_max``; 13% in the paper).

    Example:
        >>> from effdl.unroll.problem import make_problem
        >>> p = make_problem(m=20, n=40)
        >>> net = LISTACP(p.A, 3)
        >>> sum(t.numel() for t in net.parameters())  # 3 x (40 x 20 + 1)
        2403
    """

    method = "lista-cp"

    def __init__(
        self,
        A: torch.Tensor,
        layers: int = 16,
        *,
        lam: float = 0.4,
        support: bool = False,
        per_layer: float = 0.012,
        maximum: float = 0.13,
    ) -> None:
        super().__init__(A, layers)
        check_range("lam", lam, 0.0, low_open=True, hint="use lam=0.4")
        self.lam, self.support = float(lam), bool(support)
        self.per_layer, self.maximum = float(per_layer), float(maximum)
        self.fractions = support_schedule(layers, per_layer, maximum) if support else [0.0] * layers
        L = lipschitz(self.A)
        self.layers = nn.ModuleList(_CoupledLayer(self.A, L, lam) for _ in range(layers))

    def options(self) -> dict[str, Any]:
        """Constructor options."""
        opts: dict[str, Any] = {"lam": self.lam, "support": self.support}
        if self.support:
            opts.update(per_layer=self.per_layer, maximum=self.maximum)
        return opts

    def steps(self, b: torch.Tensor, depth: int | None = None) -> Iterator[torch.Tensor]:
        """Yields the layers' outputs."""
        depth = self._depth(depth)
        b, x = self._start(b)
        for k, layer in enumerate(list(self.layers)[:depth]):
            v = x + (b - x @ self.A.T) @ layer.W.T  # x + W (b - A x)
            x = support_select(v, layer.theta, self.fractions[k])  # a fraction of 0 is soft thresholding
            yield x


@SOLVERS.register("lista-cpss", description="LISTA-CPSS: LISTA-CP with support selection (Chen et al. 2018)")
class LISTACPSS(LISTACP):
    """LISTA-CP with support selection: :class:`LISTACP` with ``support=True``.

    Example:
        >>> from effdl.unroll.problem import make_problem
        >>> net = LISTACPSS(make_problem(m=20, n=40).A, 4)
        >>> [round(f, 3) for f in net.fractions]
        [0.012, 0.024, 0.036, 0.048]
    """

    method = "lista-cpss"

    def __init__(
        self, A: torch.Tensor, layers: int = 16, *, lam: float = 0.4, per_layer: float = 0.012, maximum: float = 0.13
    ) -> None:
        super().__init__(A, layers, lam=lam, support=True, per_layer=per_layer, maximum=maximum)

    def options(self) -> dict[str, Any]:
        """Constructor options."""
        return {"lam": self.lam, "per_layer": self.per_layer, "maximum": self.maximum}
