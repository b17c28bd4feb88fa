"""Multiply-accumulate counts per module, from torch's own FLOP counter (``torch.utils.flop_counter``).

Counting at the ATen level covers every matmul and convolution a model runs, including functional ones inside
custom modules (the ``q @ k^T`` of attention), with no per-layer formulas to keep in sync. One MAC is two FLOPs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import nn

from effdl.core.modules import eval_mode

__all__ = ["count_macs", "module_macs"]


def module_macs(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """MACs of one forward pass attributed to each module by name, *exclusive* of its submodules
    (``""`` is the root: work done directly in the top-level forward).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> module_macs(m, torch.zeros(1, 4))
        {'': 0, '0': 12, '1': 0, '2': 6}
    """
    from torch.utils.flop_counter import FlopCounterMode

    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    # with autograd on, fused inference fast paths (nn.MultiheadAttention, TransformerEncoderLayer) are skipped for
    # their decomposed ops, whose MACs the counter knows
    with eval_mode(model), torch.enable_grad(), counter:
        model(*args)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    inclusive: dict[str, int] = defaultdict(int)
    for key, per_op in counts.items():
        if key == "Global":
            continue
        name = "" if key == root else key[len(root) + 1 :] if key.startswith(root + ".") else key
        inclusive[name] = sum(per_op.values()) // 2
    if not counts.get(root) and counts.get("Global"):
        inclusive[""] = sum(counts["Global"].values()) // 2
    names = [n for n, _ in model.named_modules()]
    children = {n: [c for c in names if c and _parent(c) == n] for n in names}
    return {n: inclusive.get(n, 0) - sum(inclusive.get(c, 0) for c in children[n]) for n in names}


def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """Total MACs of one forward pass on ``example_inputs`` (scales with their batch size).

    Example:
        >>> count_macs(nn.Conv1d(1, 4, 3), torch.zeros(1, 1, 10))  # 4 filters x 8 positions x 3 taps
        96
    """
    return sum(module_macs(model, example_inputs).values())


def _extra_formulas() -> dict:
    """Ops that torch's counter does not know but CPU models run: the CPU flash-attention kernel behind
    ``F.scaled_dot_product_attention`` (two matmuls, as for the other SDPA kernels)."""
    aten = torch.ops.aten
    ops = [getattr(aten, name) for name in ("_scaled_dot_product_flash_attention_for_cpu",) if hasattr(aten, name)]
    return dict.fromkeys(ops, _sdpa_flops)


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _parent(name: str) -> str:
    return name.rpartition(".")[0]
