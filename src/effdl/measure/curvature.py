"""Curvature of the loss: Hessian traces by Hutchinson's estimator on Hessian-vector products (used by mixed
precision to rank layers, HAWQ-V2; shared with the loss-landscape analysis)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from effdl.core.errors import ConfigError
from effdl.core.modules import eval_mode

__all__ = ["hessian_trace"]


def hessian_trace(
    model: nn.Module,
    batches: Iterable,
    params: Mapping[str, torch.Tensor],
    *,
    loss_fn: Callable | None = None,
    samples: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """Hutchinson estimate of the trace of the loss Hessian block of each tensor in ``params``:
    ``Tr(H) ~= mean_v v^T H v`` over Rademacher vectors ``v`` (Hutchinson 1990), one Hessian-vector product per
    sample, averaged over ``batches`` of ``(inputs, targets)`` weighted by their example counts (the Hessian of
    the mean loss over all examples).

    Example:
        >>> lin = nn.Linear(3, 1, bias=False)
        >>> x = torch.randn(64, 3); y = torch.randn(64, 1)
        >>> est = hessian_trace(lin, [(x, y)], {"w": lin.weight}, loss_fn=nn.MSELoss(), samples=200)
        >>> exact = float(2 * (x * x).sum() / 64)  # d^2/dw^2 of mean((xw - y)^2)
        >>> abs(est["w"] - exact) / exact < 0.2
        True
    """
    if samples < 1:
        raise ConfigError(f"samples must be >= 1, got {samples}")
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    names, tensors = list(params), list(params.values())
    g = torch.Generator().manual_seed(seed)
    totals = dict.fromkeys(names, 0.0)
    count = 0  # examples
    with eval_mode(model):
        for batch in batches:
            x, y = batch[0], batch[1]
            loss = loss_fn(model(x), y)
            grads = torch.autograd.grad(loss, tensors, create_graph=True)
            for _ in range(samples):
                vs = [(torch.randint(0, 2, t.shape, generator=g) * 2 - 1).to(t.dtype) for t in tensors]
                hvs = torch.autograd.grad(grads, tensors, grad_outputs=vs, retain_graph=True)
                for name, v, hv in zip(names, vs, hvs, strict=True):
                    totals[name] += len(y) * float((v * hv).sum())
            count += len(y)
    if count == 0:
        raise ConfigError("hessian_trace got no batches; pass at least one (inputs, targets) batch")
    return {k: v / (count * samples) for k, v in totals.items()}
