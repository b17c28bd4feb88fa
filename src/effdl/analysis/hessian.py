"""The Hessian of the loss with respect to all trainable weights, without forming it: Hessian-vector products
(Pearlmutter 1994) by double back-propagation, the top eigenvalues by power iteration (with deflation) or
Lanczos (with full re-orthogonalization), the smallest eigenvalue, the min/max eigenvalue ratio of Li et al.'s
(2018) convexity maps, and the trace by Hutchinson's estimator."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn

from effdl.core.errors import ConfigError
from effdl.core.modules import eval_mode
from effdl.measure.curvature import hessian_trace

__all__ = ["HessianOperator", "Spectrum", "hessian_spectrum", "hessian_trace_total"]


class HessianOperator:
    """``v -> H v`` for the Hessian ``H`` of the mean loss over ``batches`` with respect to the model's trainable
    parameters (in eval mode, so BatchNorm uses its running statistics, as when the loss is evaluated).

    Args:
        model: the network.
        batches: list of ``(inputs, targets)``; the loss is averaged over all examples.
        loss_fn: ``loss_fn(outputs, targets)`` giving the batch's mean loss; default cross-entropy.

    Example:
        >>> lin = nn.Linear(2, 1, bias=False)
        >>> x = torch.eye(2); y = torch.zeros(2, 1)
        >>> op = HessianOperator(lin, [(x, y)], loss_fn=nn.MSELoss())
        >>> op.matvec(torch.tensor([1.0, 0.0])).tolist()  # H = 2 X^T X / n = I
        [1.0, 0.0]
    """

    def __init__(self, model: nn.Module, batches: Sequence[tuple], *, loss_fn: Callable | None = None):
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError(f"{type(model).__name__} has no trainable parameters; the Hessian is empty")
        self.batches = list(batches)
        if not self.batches:
            raise ConfigError("the Hessian needs at least one (inputs, targets) batch")
        self.loss_fn = loss_fn or nn.CrossEntropyLoss()
        self.total = sum(len(b[1]) for b in self.batches)
        self.size = sum(p.numel() for p in self.params)
        self.calls = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat vector ``v`` of ``size`` entries (returned flat, float32)."""
        if v.shape != (self.size,):
            raise ConfigError(f"expected a flat vector of {self.size} entries, got shape {tuple(v.shape)}")
        vs, offset = [], 0
        for p in self.params:
            vs.append(v[offset : offset + p.numel()].view_as(p).to(p.dtype))
            offset += p.numel()
        out = torch.zeros(self.size, dtype=torch.float32)
        with eval_mode(self.model):
            for x, y in self.batches:
                loss = self.loss_fn(self.model(x), y) * (len(y) / self.total)
                grads = torch.autograd.grad(loss, self.params, create_graph=True)
                hv = torch.autograd.grad(grads, self.params, grad_outputs=vs)
                out += torch.cat([h.reshape(-1).float() for h in hv])
        self.calls += 1
        return out


@dataclasses.dataclass
class Spectrum:
    """Extreme eigenvalues of the Hessian.

    Attributes:
        top: the largest eigenvalues, descending.
        min: the smallest (most negative) eigenvalue.
        hvp_calls: Hessian-vector products used.
        method: ``lanczos`` or ``power``.
    """

    top: list[float]
    min: float
    hvp_calls: int
    method: str

    @property
    def ratio(self) -> float:
        """``|lambda_min / lambda_max|``, the non-convexity measure of Li et al.'s (2018) convexity maps: near 0
        where the surface is locally convex, large where it has strong negative curvature."""
        return abs(self.min / self.top[0]) if self.top[0] != 0 else float("inf")


def _unit(size: int, g: torch.Generator) -> torch.Tensor:
    v = torch.randn(size, generator=g, dtype=torch.float64)
    return v / v.norm()


def _lanczos(op: HessianOperator, steps: int, g: torch.Generator) -> torch.Tensor:
    """Ritz values (ascending) of ``steps`` Lanczos iterations with full re-orthogonalization."""
    steps = min(steps, op.size)
    basis = [_unit(op.size, g)]
    alphas, betas = [], []
    for j in range(steps):
        w = op.matvec(basis[j].float()).double()
        alphas.append(float(w @ basis[j]))
        w -= alphas[-1] * basis[j] + (betas[-1] * basis[j - 1] if j else 0.0)
        for _ in range(2):  # twice is enough to keep the basis orthogonal in floating point
            for q in basis:
                w -= (w @ q) * q
        beta = float(w.norm())
        if j == steps - 1 or beta < 1e-10 * max(1.0, abs(alphas[-1])):
            break
        betas.append(beta)
        basis.append(w / beta)
    k = len(alphas)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if k > 1:
        off = torch.tensor(betas[: k - 1], dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigvalsh(t)


def _power(op: HessianOperator, iterations: int, tol: float, g, found: list[torch.Tensor], shift: float) -> tuple:
    """Largest-magnitude eigenpair of ``H - shift I`` orthogonal to ``found`` (deflation)."""
    v = _unit(op.size, g)
    eig = None
    for _ in range(iterations):
        for u in found:
            v -= (v @ u) * u
        v /= v.norm()
        hv = op.matvec(v.float()).double() - shift * v
        new = float(v @ hv)
        v = hv / max(float(hv.norm()), 1e-30)
        if eig is not None and abs(new - eig) <= tol * max(abs(eig), 1e-12):
            eig = new
            break
        eig = new
    return eig, v


def hessian_spectrum(
    model: nn.Module,
    batches: Sequence[tuple],
    *,
    top_k: int = 1,
    method: str = "lanczos",
    iterations: int = 30,
    tol: float = 1e-4,
    seed: int = 0,
    loss_fn: Callable | None = None,
) -> Spectrum:
    """The ``top_k`` largest eigenvalues and the smallest eigenvalue of the loss Hessian over all trainable weights.

    Args:
        model: the network (unchanged).
        batches: ``(inputs, targets)`` batches; the loss is their example-weighted mean.
        top_k: how many of the largest eigenvalues.
        method: ``lanczos`` (``iterations`` steps give all extreme Ritz values at once) or ``power`` (power
            iteration with deflation for each of the top-k, then on ``H - lambda_max I`` for the smallest).
        iterations: Lanczos steps, or the maximum power iterations per eigenvalue.
        tol: relative change that stops power iteration.
        seed: seed of the random start vectors.
        loss_fn: mean loss of a batch, default cross-entropy.

    Example:
        >>> lin = nn.Linear(2, 1, bias=False)
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]]); y = torch.zeros(2, 1)
        >>> s = hessian_spectrum(lin, [(x, y)], top_k=2, loss_fn=nn.MSELoss())  # H = diag(1, 4)
        >>> [round(v, 4) for v in s.top], round(s.min, 4)
        ([4.0, 1.0], 1.0)
    """
    if method not in ("lanczos", "power"):
        raise ConfigError(f"method must be 'lanczos' or 'power', got {method!r}")
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    op = HessianOperator(model, batches, loss_fn=loss_fn)
    if top_k > op.size:
        raise ConfigError(f"top_k={top_k} exceeds the {op.size} trainable parameters")
    g = torch.Generator().manual_seed(seed)
    if method == "lanczos":
        ritz = _lanczos(op, max(iterations, top_k + 1), g)
        top = [float(v) for v in ritz.flip(0)[:top_k]]
        return Spectrum(top=top, min=float(ritz[0]), hvp_calls=op.calls, method=method)
    found: list[torch.Tensor] = []
    top = []
    for _ in range(top_k):
        eig, vec = _power(op, iterations, tol, g, found, 0.0)
        top.append(eig)
        found.append(vec / vec.norm())
    order = sorted(range(top_k), key=lambda i: -top[i])
    top = [top[i] for i in order]
    lam_max = max(top)
    shifted, _ = _power(op, iterations, tol, g, [], lam_max)  # most negative of H - lambda_max I
    return Spectrum(top=top, min=shifted + lam_max, hvp_calls=op.calls, method=method)


def hessian_trace_total(
    model: nn.Module, batches: Sequence[tuple], *, samples: int = 16, seed: int = 0, loss_fn: Callable | None = None
) -> float:
    """Hutchinson estimate of the trace of the loss Hessian over all trainable weights (the sum of the per-tensor
    diagonal blocks from :func:`effdl.measure.hessian_trace`).

    Example:
        >>> lin = nn.Linear(2, 1, bias=False)
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]]); y = torch.zeros(2, 1)
        >>> hessian_trace_total(lin, [(x, y)], loss_fn=nn.MSELoss())  # Rademacher is exact on a diagonal H
        5.0
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ConfigError(f"{type(model).__name__} has no trainable parameters; the Hessian is empty")
    return float(sum(hessian_trace(model, batches, params, loss_fn=loss_fn, samples=samples, seed=seed).values()))
