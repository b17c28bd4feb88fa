"""Per-weight saliency at initialization, shared by zero-cost NAS proxies and pruning criteria: SNIP (Lee et al.
2019), GraSP (Wang et al. 2020), SynFlow (Tanaka et al. 2020), gradient norms, and the Fisher saliency of layer
outputs (Theis et al. 2018; Turner et al. 2020). Each works on a copy of the model, so the caller's weights,
gradients and BatchNorm statistics are untouched.

Weights are the ``weight`` tensors of convolution and linear layers (``prunable_weights``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from effdl.core.errors import ConfigError

__all__ = [
    "fisher_scores",
    "gradient_norms",
    "grasp_scores",
    "prunable_weights",
    "snip_scores",
    "synflow_scores",
]

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{layer name: weight}`` of the model's convolution and linear layers that require gradients.

    Example:
        >>> list(prunable_weights(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))))
        ['0', '2']
    """
    found = {n: m.weight for n, m in model.named_modules() if isinstance(m, _LAYERS) and m.weight.requires_grad}
    if not found:
        raise ConfigError(
            f"{type(model).__name__} has no trainable Conv/Linear weights; saliency needs at least one such layer"
        )
    return found


def _check_batches(batches: Sequence[tuple]) -> None:
    if not batches:
        raise ConfigError("pass at least one (inputs, targets) batch")


def _accumulate_grads(model: nn.Module, batches: Sequence[tuple], loss_fn: Callable) -> None:
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        (loss_fn(model(x), y) / len(batches)).backward()


def gradient_norms(model: nn.Module, batches: Sequence[tuple], *, loss_fn: Callable | None = None) -> dict[str, float]:
    """``||dL/dW||_2`` of each layer's weight (the loss averaged over ``batches``).

    Example:
        >>> lin = nn.Linear(2, 2); x = torch.ones(4, 2); y = torch.zeros(4, dtype=torch.long)
        >>> sorted(gradient_norms(lin, [(x, y)]))
        ['']
    """
    _check_batches(batches)
    net = copy.deepcopy(model).train()
    _accumulate_grads(net, batches, loss_fn or nn.CrossEntropyLoss())
    return {n: float(w.grad.norm()) if w.grad is not None else 0.0 for n, w in prunable_weights(net).items()}


def snip_scores(
    model: nn.Module, batches: Sequence[tuple], *, loss_fn: Callable | None = None
) -> dict[str, torch.Tensor]:
    """SNIP connection sensitivity ``|dL/dw * w|`` per weight (Lee et al. 2019).

    Example:
        >>> lin = nn.Linear(2, 2); x = torch.ones(4, 2); y = torch.zeros(4, dtype=torch.long)
        >>> snip_scores(lin, [(x, y)])[""].shape
        torch.Size([2, 2])
    """
    _check_batches(batches)
    net = copy.deepcopy(model).train()
    _accumulate_grads(net, batches, loss_fn or nn.CrossEntropyLoss())
    return {
        n: (w.grad * w).detach().abs() if w.grad is not None else torch.zeros_like(w)
        for n, w in prunable_weights(net).items()
    }


def grasp_scores(
    model: nn.Module, batches: Sequence[tuple], *, loss_fn: Callable | None = None
) -> dict[str, torch.Tensor]:
    """GraSP ``-w * (H g)`` per weight (Wang et al. 2020): how removing a weight changes the gradient flow; the
    Hessian-gradient product comes from double back-propagation.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
        >>> x = torch.randn(4, 2); y = torch.zeros(4, dtype=torch.long)
        >>> grasp_scores(net, [(x, y)])["0"].shape
        torch.Size([3, 2])
    """
    _check_batches(batches)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    net = copy.deepcopy(model).train()
    weights = prunable_weights(net)
    params = list(weights.values())
    grads = [torch.zeros_like(p) for p in params]
    for x, y in batches:  # g, without a graph
        for g, d in zip(grads, torch.autograd.grad(loss_fn(net(x), y), params, allow_unused=True), strict=True):
            if d is not None:
                g += d / len(batches)
    hg = [torch.zeros_like(p) for p in params]
    for x, y in batches:  # H g = d(g_graph . g)/dw
        g_graph = torch.autograd.grad(loss_fn(net(x), y), params, create_graph=True, allow_unused=True)
        z = sum((a * b).sum() for a, b in zip(g_graph, grads, strict=True) if a is not None)
        if not isinstance(z, torch.Tensor) or not z.requires_grad:
            continue
        for h, d in zip(hg, torch.autograd.grad(z, params, allow_unused=True), strict=True):
            if d is not None:
                h += d.detach() / len(batches)
    return {n: -(w.detach() * h) for (n, w), h in zip(weights.items(), hg, strict=True)}


def synflow_scores(model: nn.Module, input_shape: Sequence[int]) -> dict[str, torch.Tensor]:
    """SynFlow ``|w * dR/dw|`` per weight, with ``R`` the sum of the outputs of the network with all weights
    replaced by their absolute values, on an all-ones input, in float64 and eval mode (Tanaka et al. 2020). Data-free.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> float(synflow_scores(net, (2,))["2"].sum()) > 0
        True
    """
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in net.state_dict().values():
            if p.is_floating_point():
                p.abs_()
    net.zero_grad(set_to_none=True)
    net(torch.ones(1, *input_shape, dtype=torch.float64)).sum().backward()
    return {
        n: (w.grad * w).detach().abs().float() if w.grad is not None else torch.zeros_like(w, dtype=torch.float32)
        for n, w in prunable_weights(net).items()
    }


def fisher_scores(
    model: nn.Module, batches: Sequence[tuple], *, loss_fn: Callable | None = None
) -> dict[str, torch.Tensor]:
    """Fisher saliency of each output channel of each Conv/Linear layer: ``0.5 * mean_n (sum_s a * dL/da)^2`` with
    ``a`` the layer's output activation and ``s`` its spatial positions (Theis et al. 2018, as used by Turner et
    al. 2020 and the zero-cost proxies of Abdelfattah et al. 2021).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> x = torch.randn(4, 2); y = torch.zeros(4, dtype=torch.long)
        >>> fisher_scores(net, [(x, y)])["0"].shape
        torch.Size([3])
    """
    _check_batches(batches)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    net = copy.deepcopy(model).train()
    layers = {n: net.get_submodule(n) for n in prunable_weights(net)}
    acts: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, name=n: acts.__setitem__(name, out)) for n, m in layers.items()
    ]
    totals = {n: torch.zeros(m.weight.shape[0]) for n, m in layers.items()}
    try:
        for x, y in batches:
            acts.clear()
            out = net(x)
            live = [n for n in layers if n in acts and acts[n].requires_grad]
            grads = torch.autograd.grad(loss_fn(out, y), [acts[n] for n in live], allow_unused=True)
            for n, g in zip(live, grads, strict=True):
                if g is None:
                    continue
                a = acts[n].detach()
                per = (a * g).reshape(a.shape[0], a.shape[1], -1).sum(-1)  # (N, C): sum over positions
                totals[n] += 0.5 * per.pow(2).mean(0) / len(batches)
    finally:
        for h in hooks:
            h.remove()
    return totals
