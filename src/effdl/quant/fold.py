"""Batch-norm folding: a convolution or linear layer followed by BatchNorm becomes one layer with adjusted weights
and bias (``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``), as every
integer inference engine expects. Valid in eval mode (running statistics)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from effdl.core.errors import UnsupportedError
from effdl.core.modules import swap_module_
from effdl.measure.capture import batchnorm_pairs

__all__ = ["fold_batchnorm_", "fold_bn_weights"]

log = logging.getLogger(__name__)

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_bn_weights(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of the layer that equals ``bn(layer(x))`` in eval mode (output channels on axis 0).

    Example:
        >>> bn = nn.BatchNorm1d(2).eval()
        >>> w, b = fold_bn_weights(torch.ones(2, 3), None, bn)
        >>> w.shape, b.shape
        (torch.Size([2, 3]), torch.Size([2]))
    """
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedError(
            "BatchNorm without running statistics (track_running_stats=False) cannot be folded; keep it unfolded"
        )
    gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
    beta = bn.bias if bn.affine else torch.zeros_like(bn.running_var)
    factor = gamma / torch.sqrt(bn.running_var + bn.eps)  # (out,)
    b = bias if bias is not None else torch.zeros_like(bn.running_mean)
    w = weight * factor.reshape(-1, *([1] * (weight.dim() - 1)))
    return w, (b - bn.running_mean) * factor + beta


def _pairs(model: nn.Module, example_inputs: Any = None) -> list[tuple[str, str]]:
    """(layer, batchnorm) module names where the BN is the only consumer of the layer's output. With example
    inputs the model is captured on one real forward (any model that runs); without, it is traced with torch.fx."""
    modules = dict(model.named_modules())
    if not any(isinstance(m, _BN) for m in modules.values()):
        return []
    if example_inputs is not None:
        found = batchnorm_pairs(model, example_inputs)
    else:
        found = _fx_pairs(model)
    calls: dict[str, int] = {}
    pairs = []
    for layer_name, bn_name in found:
        layer, bn = modules.get(layer_name), modules.get(bn_name)
        if isinstance(layer, _FOLDABLE) and isinstance(bn, _BN) and layer.weight.shape[0] == bn.num_features:
            pairs.append((layer_name, bn_name))
            calls[layer_name] = calls.get(layer_name, 0) + 1
            calls[bn_name] = calls.get(bn_name, 0) + 1
    return [(a, b) for a, b in pairs if calls[a] == 1 and calls[b] == 1]


def _fx_pairs(model: nn.Module) -> list[tuple[str, str]]:
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:
        raise UnsupportedError(
            f"torch.fx could not trace {type(model).__name__} to find Conv->BatchNorm pairs ({type(exc).__name__}: "
            f"{exc}); pass example_inputs (the model is then captured on one real forward) or fold_bn=False"
        ) from exc
    modules = dict(model.named_modules())
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BN):
            continue
        src = node.args[0] if node.args else None
        if isinstance(src, torch.fx.Node) and src.op == "call_module" and len(src.users) == 1:
            pairs.append((str(src.target), str(node.target)))
    used = [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    return [(a, b) for a, b in pairs if used.count(a) == 1 and used.count(b) == 1]


@torch.no_grad()
def fold_batchnorm_(
    model: nn.Module,
    *,
    example_inputs: Any = None,
    structure_only: bool = False,
    pairs: list[tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    """Folds every BatchNorm that directly follows a Conv or Linear layer (and is its only consumer) into that
    layer, and replaces the BatchNorm with ``nn.Identity``. The model must be in eval mode for the result to match.

    The pairs are found on one real forward over ``example_inputs`` (any model that runs), or with torch.fx when
    none are given; a model without BatchNorm is not traced at all. ``pairs`` skips the search (a checkpoint
    records the pairs it folded).

    With ``structure_only=True`` only the structure changes (BatchNorm -> Identity, a bias where there was none),
    for a fresh model about to load the weights of a folded one.

    Returns:
        The folded ``(layer, batchnorm)`` module names.

    Example:
        >>> m = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU()).eval()
        >>> fold_batchnorm_(m)
        [('0', '1')]
        >>> type(m[1]).__name__, m[0].bias is not None
        ('Identity', True)
    """
    pairs = _pairs(model, example_inputs) if pairs is None else [tuple(p) for p in pairs]
    for layer_name, bn_name in pairs:
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        if structure_only:
            if layer.bias is None:
                out = layer.weight.shape[0]
                layer.bias = nn.Parameter(layer.weight.new_zeros(out))
        else:
            w, b = fold_bn_weights(layer.weight, layer.bias, bn)
            layer.weight.copy_(w)
            if layer.bias is None:
                layer.bias = nn.Parameter(b.detach().clone())
            else:
                layer.bias.copy_(b)
        swap_module_(model, bn_name, nn.Identity())
    log.info("folded %d BatchNorm layers", len(pairs))
    return pairs
