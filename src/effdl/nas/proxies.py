"""Zero-cost proxies: one number per untrained network that should rank architectures like their trained accuracy.

Each proxy is ``score(model, batches) -> float`` (higher = predicted better) over a list of ``(inputs, targets)``
mini-batches, registered in :data:`PROXIES`. :func:`score_model` runs one by name or callable on a copy of the
model, so the caller's weights are never changed.

- ``zico`` (Li et al., ICLR 2023): per layer, ``log sum_theta mean_b|g_b(theta)| / std_b(g_b(theta))`` over the
  mini-batch gradients ``g_b``, summed over layers (parameters with zero std are skipped, as in the authors' code).
- ``synflow``, ``snip``, ``grasp``, ``fisher``, ``grad_norm``: the sums of the saliencies in
  :mod:`effdl.measure.saliency` (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021).
- ``naswot`` (Mellor et al., ICML 2021): log-determinant of the kernel ``K[i, j] = #units - Hamming(c_i, c_j)`` of the
  ReLU activation codes ``c_i`` of the examples of one batch.
- ``params``, ``macs``: size baselines.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from effdl.core.errors import ConfigError
from effdl.core.registry import Registry
from effdl.measure.macs import count_macs
from effdl.measure.saliency import (
    fisher_scores,
    gradient_norms,
    grasp_scores,
    prunable_weights,
    snip_scores,
    synflow_scores,
)
from effdl.measure.size import count_params

__all__ = ["PROXIES", "Proxy", "score_model", "zico_score"]

Proxy = Callable[[nn.Module, Sequence[tuple]], float]
PROXIES: Registry[Proxy] = Registry("proxy name")


def _total(scores: dict[str, torch.Tensor]) -> float:
    return float(sum(float(t.double().sum()) for t in scores.values()))


@PROXIES.register("zico", description="ZiCo: sum over layers of log(sum mean|g| / std(g)) across mini-batches")
def zico_score(model: nn.Module, batches: Sequence[tuple], *, loss_fn: Callable | None = None) -> float:
    """ZiCo (Li, Bhardwaj, Marculescu et al., ICLR 2023, eq. 6): with ``g_b`` the gradient of the loss of
    mini-batch ``b`` (train mode), per Conv/Linear layer ``l``:
    ``log( sum_{theta in l} mean_b |g_b(theta)| / std_b(g_b(theta)) )``, summed over layers.

    Example:
        >>> torch.manual_seed(0); net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        <torch._C.Generator object at ...>
        >>> batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(2)]
        >>> isinstance(zico_score(net, batches), float)
        True
    """
    if len(batches) < 2:
        raise ConfigError(
            f"ZiCo needs at least 2 mini-batches (the std of a gradient across one batch is undefined), got "
            f"{len(batches)}; pass e.g. 2 batches of 64"
        )
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    net = copy.deepcopy(model).train()
    weights = prunable_weights(net)
    per_batch: dict[str, list[torch.Tensor]] = {n: [] for n in weights}
    for x, y in batches:
        net.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        for n, w in weights.items():
            per_batch[n].append(w.grad.detach().flatten().double() if w.grad is not None else torch.zeros(w.numel()))
    total = 0.0
    for grads in per_batch.values():
        g = torch.stack(grads)  # (B, P)
        std = g.std(dim=0, unbiased=False)
        mean_abs = g.abs().mean(dim=0)
        keep = std > 0
        ratio = float((mean_abs[keep] / std[keep]).sum())
        if ratio > 0:
            total += math.log(ratio)
    return total


@PROXIES.register("synflow", description="SynFlow: sum |w * dR/dw| of the |w| network on an all-ones input")
def synflow_proxy(model: nn.Module, batches: Sequence[tuple]) -> float:
    """Sum of :func:`~effdl.measure.saliency.synflow_scores` (data-free; the batches give the input shape)."""
    return _total(synflow_scores(model, tuple(batches[0][0].shape[1:])))


@PROXIES.register("snip", description="SNIP: sum |g * w|")
def snip_proxy(model: nn.Module, batches: Sequence[tuple]) -> float:
    """Sum of :func:`~effdl.measure.saliency.snip_scores`."""
    return _total(snip_scores(model, batches))


@PROXIES.register("grasp", description="GraSP: sum -w * (H g)")
def grasp_proxy(model: nn.Module, batches: Sequence[tuple]) -> float:
    """Sum of :func:`~effdl.measure.saliency.grasp_scores`."""
    return _total(grasp_scores(model, batches))


@PROXIES.register("fisher", description="Fisher: sum over channels of 0.5 mean (sum a * dL/da)^2")
def fisher_proxy(model: nn.Module, batches: Sequence[tuple]) -> float:
    """Sum of :func:`~effdl.measure.saliency.fisher_scores`."""
    return _total(fisher_scores(model, batches))


@PROXIES.register("grad_norm", description="sum of the layers' gradient norms")
def grad_norm_proxy(model: nn.Module, batches: Sequence[tuple]) -> float:
    """Sum of :func:`~effdl.measure.saliency.gradient_norms`."""
    return float(sum(gradient_norms(model, batches).values()))


@PROXIES.register("naswot", description="NASWOT: log|det K| of the ReLU activation-code kernel of one batch")
def naswot_proxy(model: nn.Module, batches: Sequence[tuple]) -> float:
    """Mellor et al. (2021): ``log |det K|`` with ``K = N_A - Hamming`` over the binary ReLU codes of the first
    batch's examples, in train mode."""
    net = copy.deepcopy(model).train()
    codes: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: codes.append((out.detach() > 0).flatten(1).double()))
        for m in net.modules()
        if isinstance(m, nn.ReLU)
    ]
    if not hooks:
        raise ConfigError(f"NASWOT needs ReLU activations; {type(model).__name__} has no nn.ReLU module")
    try:
        with torch.no_grad():
            net(batches[0][0])
    finally:
        for h in hooks:
            h.remove()
    c = torch.cat(codes, dim=1)  # (N, units)
    k = c @ c.T + (1 - c) @ (1 - c).T  # = units - Hamming distance
    return float(torch.linalg.slogdet(k)[1])


@PROXIES.register("params", description="number of parameters (baseline)")
def params_proxy(model: nn.Module, batches: Sequence[tuple]) -> float:
    """Parameter count."""
    return float(count_params(model))


@PROXIES.register("macs", description="multiply-accumulates per example (baseline)")
def macs_proxy(model: nn.Module, batches: Sequence[tuple]) -> float:
    """MACs for one example of the first batch."""
    return float(count_macs(model, batches[0][0][:1]))


def score_model(model: nn.Module, batches: Sequence[tuple], proxy: str | Proxy = "zico") -> float:
    """Scores ``model`` with a proxy (a registered name or a callable ``f(model, batches)``) on a copy of it.

    Raises :class:`ConfigError` for a model without trainable parameters, no batches, or batches of one example
    (BatchNorm statistics and per-example spreads are undefined there); an unknown name lists the valid ones.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(2)]
        >>> score_model(net, batches, "params")
        67.0
    """
    fn = PROXIES.get(proxy)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"{type(model).__name__} has no trainable parameters; a proxy needs weights to score")
    batches = list(batches)
    if not batches:
        raise ConfigError("pass at least one (inputs, targets) batch (ZiCo needs two)")
    small = [len(b[1]) for b in batches if len(b[1]) < 2]
    if small:
        raise ConfigError(
            f"batches of size 1 leave the per-example statistics undefined (BatchNorm, ZiCo's std, NASWOT's kernel); "
            f"got batch sizes {[len(b[1]) for b in batches]}; use batches of at least 2 examples, e.g. 64"
        )
    return float(fn(copy.deepcopy(model), batches))
