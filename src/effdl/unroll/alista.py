"""ALISTA and HyperLISTA: analytic weights, so that only scalars are learned (or only three are tuned).

- ALISTA (Liu, Chen, Wang & Yin, ICLR 2019, eq. 15): ``x^{k+1} = ss(x^k - gamma^k W^T (A x^k - b), theta^k, p^k)``
  with ``W`` from :func:`~effdl.unroll.coherence.analytic_weight`; 2 numbers per layer are trained.
- HyperLISTA (Chen, Liu, Wang & Yin, NeurIPS 2021, eq. 14): ALISTA with momentum, whose threshold, momentum and
  support-selection fraction are computed at every layer from the current iterate and three hyperparameters:

  ``theta^k = c1 mu gamma ||A^+ (A x^k - b)||_1``, ``beta^k = c2 mu ||x^k||_0``,
  ``p^k = clamp(c3 log(||A^+ b||_1 / ||A^+ (A x^k - b)||_1), 0, 1)``,

  where ``mu`` is the generalized coherence of ``W`` with ``A`` and ``A^+`` the pseudo-inverse (it stands in for the
  unknown error ``x^k - x*``). The three numbers are tuned without back-propagation
  (:func:`~effdl.unroll.hyper.tune_hyperlista`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from effdl.core.config import check_range
from effdl.core.errors import ShapeError
from effdl.unroll.coherence import analytic_weight, mutual_coherence
from effdl.unroll.shrink import support_schedule, support_select
from effdl.unroll.solvers import SOLVERS, UnrolledSolver

__all__ = ["ALISTA", "HyperLISTA"]


class _StepLayer(nn.Module):
    def __init__(self, gamma: float, theta: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))
        self.theta = nn.Parameter(torch.tensor(float(theta)))


def _weight(A: torch.Tensor, W: torch.Tensor | None) -> torch.Tensor:
    if W is None:
        return analytic_weight(A)
    if W.shape != A.shape:
        raise ShapeError(f"W must have the shape of A {tuple(A.shape)}, got {tuple(W.shape)}")
    return W.to(A.dtype)


@SOLVERS.register("alista", description="ALISTA: analytic W, per-layer step size and threshold (Liu et al. 2019)")
class ALISTA(UnrolledSolver):
    """ALISTA: the analytic weight matrix, with a learned step size and threshold per layer.

    Args:
        A: the dictionary ``(m, n)``.
        layers: number of layers K.
        W: the weight matrix (default: :func:`~effdl.unroll.coherence.analytic_weight` of ``A``).
        gamma: initial step sizes.
        theta: initial thresholds.
        support: use support selection (as the paper does).
        per_layer: support-selection fraction added per layer.
        maximum: its cap.

    Example:
        >>> from effdl.unroll.problem import make_problem
        >>> net = ALISTA(make_problem(m=20, n=40).A, 16)
        >>> sum(t.numel() for t in net.parameters())  # gamma and theta per layer
        32
    """

    method = "alista"

    def __init__(
        self,
        A: torch.Tensor,
        layers: int = 16,
        *,
        W: torch.Tensor | None = None,
        gamma: float = 1.0,
        theta: float = 0.1,
        support: bool = True,
        per_layer: float = 0.012,
        maximum: float = 0.13,
    ) -> None:
        super().__init__(A, layers)
        check_range("gamma", gamma, 0.0, low_open=True, hint="use gamma=1")
        check_range("theta", theta, 0.0, hint="use theta=0.1")
        self.register_buffer("W", _weight(self.A, W))
        self.gamma0, self.theta0, self.support = float(gamma), float(theta), bool(support)
        self.per_layer, self.maximum = float(per_layer), float(maximum)
        self.fractions = support_schedule(layers, per_layer, maximum) if support else [0.0] * layers
        self.layers = nn.ModuleList(_StepLayer(gamma, theta) for _ in range(layers))

    def options(self) -> dict[str, Any]:
        """Constructor options (``W`` travels in the state dict)."""
        return {
            "gamma": self.gamma0,
            "theta": self.theta0,
            "support": self.support,
            "per_layer": self.per_layer,
            "maximum": self.maximum,
        }

    def steps(self, b: torch.Tensor, depth: int | None = None) -> Iterator[torch.Tensor]:
        """Yields the layers' outputs."""
        depth = self._depth(depth)
        b, x = self._start(b)
        for k, layer in enumerate(list(self.layers)[:depth]):
            v = x - layer.gamma * ((x @ self.A.T - b) @ self.W)  # x - gamma W^T (A x - b)
            x = support_select(v, layer.theta, self.fractions[k])  # a fraction of 0 is soft thresholding
            yield x


@SOLVERS.register("hyperlista", description="HyperLISTA: ALISTA + momentum, 3 tuned hyperparameters (Chen et al. 2021)")
class HyperLISTA(UnrolledSolver):
    """HyperLISTA: every layer's threshold, momentum and support fraction computed from three numbers.

    Args:
        A: the dictionary ``(m, n)``.
        layers: number of layers K.
        c1: threshold scale.
        c2: momentum scale.
        c3: support-selection scale. The defaults are tuned for the standard problem (m=250, n=500, 10%
            non-zeros, noiseless, 16 layers); tune them for others.
        gamma: the step size of every layer.
        W: the weight matrix (default: ALISTA's analytic one).

    Example:
        >>> from effdl.unroll.problem import make_problem
        >>> net = HyperLISTA(make_problem(m=20, n=40).A, 8, c1=0.5, c2=0.1, c3=1.0)
        >>> sum(t.numel() for t in net.parameters()), net.hyperparameters()
        (0, {'c1': 0.5, 'c2': 0.1, 'c3': 1.0})
    """

    method = "hyperlista"
    learned = False

    def __init__(
        self,
        A: torch.Tensor,
        layers: int = 16,
        *,
        c1: float = 0.07,
        c2: float = 0.015,
        c3: float = 0.4,
        gamma: float = 1.0,
        W: torch.Tensor | None = None,
    ) -> None:
        super().__init__(A, layers)
        for name, value in (("c1", c1), ("c2", c2), ("c3", c3)):
            check_range(name, value, 0.0, hint="tune it with effdl.unroll.tune_hyperlista")
        check_range("gamma", gamma, 0.0, low_open=True, hint="use gamma=1")
        self.register_buffer("W", _weight(self.A, W))
        self.register_buffer("A_pinv", torch.linalg.pinv(self.A.double()).to(self.A.dtype))  # (n, m)
        self.mu = mutual_coherence(self.A, self.W)
        self.c1, self.c2, self.c3, self.gamma = float(c1), float(c2), float(c3), float(gamma)

    def hyperparameters(self) -> dict[str, float]:
        """The three tuned numbers."""
        return {"c1": self.c1, "c2": self.c2, "c3": self.c3}

    def options(self) -> dict[str, Any]:
        """Constructor options."""
        return {**self.hyperparameters(), "gamma": self.gamma}

    def steps(self, b: torch.Tensor, depth: int | None = None) -> Iterator[torch.Tensor]:
        """Yields the layers' outputs."""
        depth = self._depth(depth)
        b, x = self._start(b)
        x_prev = x
        l1_b = (b @ self.A_pinv.T).abs().sum(dim=1, keepdim=True).clamp_min(1e-30)  # ||A^+ b||_1, (batch, 1)
        for _ in range(depth):
            residual = x @ self.A.T - b  # (batch, m)
            l1_err = (residual @ self.A_pinv.T).abs().sum(dim=1, keepdim=True).clamp_min(1e-30)
            theta = self.c1 * self.mu * self.gamma * l1_err  # (batch, 1)
            beta = self.c2 * self.mu * (x != 0).sum(dim=1, keepdim=True).to(x.dtype)
            fraction = (self.c3 * torch.log(l1_b / l1_err)).clamp(0.0, 1.0).squeeze(1)  # (batch,)
            v = x - self.gamma * (residual @ self.W) + beta * (x - x_prev)
            x_prev, x = x, support_select(v, theta, fraction)
            yield x
