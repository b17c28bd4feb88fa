"""Peak memory of a forward pass on CPU, counted exactly from tensor allocations.

A ``TorchDispatchMode`` sees every tensor each ATen op creates; each new storage is counted while it is alive
(weak references tell when it is freed). This is exact and repeatable, unlike process RSS, which the allocator and
the other users of the machine blur.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from effdl.core.modules import eval_mode

__all__ = ["MemoryStats", "peak_allocated", "peak_forward_memory"]


@dataclasses.dataclass
class MemoryStats:
    """Bytes held during one forward pass.

    Attributes:
        weights_bytes: parameters and buffers.
        inputs_bytes: the example inputs.
        peak_activation_bytes: the largest total of tensors created by the forward pass alive at one time.
        peak_bytes: the sum of the three: what the forward pass needs at its peak.

    Example:
        >>> peak_forward_memory(nn.Linear(4, 2), torch.zeros(1, 4)).peak_activation_bytes  # one (1, 2) float output
        8
    """

    weights_bytes: int
    inputs_bytes: int
    peak_activation_bytes: int

    @property
    def peak_bytes(self) -> int:
        """Weights + inputs + peak activations."""
        return self.weights_bytes + self.inputs_bytes + self.peak_activation_bytes


class _AllocationTracker(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # outputs that share storage with an input are views or in-place results: no new memory
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self._track(t.untyped_storage())
        return out

    def _track(self, storage) -> None:
        key = storage.data_ptr()
        nbytes = storage.nbytes()
        if nbytes == 0 or key in self.live:
            return
        self.live[key] = nbytes
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


def _tensor_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def peak_forward_memory(model: nn.Module, example_inputs: Any) -> MemoryStats:
    """Measures the bytes a no-grad forward pass of ``model`` on ``example_inputs`` needs at its peak.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> s = peak_forward_memory(m, torch.zeros(1, 4))
        >>> s.weights_bytes, s.peak_activation_bytes  # 58 floats; at most the (1, 8) hidden + (1, 8) ReLU out
        (232, 64)
    """
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    weights = _tensor_bytes([*model.parameters(), *model.buffers()])
    inputs = _tensor_bytes(tree_leaves(args))
    tracker = _AllocationTracker()
    with eval_mode(model), torch.no_grad(), tracker:
        out = model(*args)
        del out
    return MemoryStats(weights_bytes=weights, inputs_bytes=inputs, peak_activation_bytes=tracker.peak)


def peak_allocated(fn: Any) -> tuple[Any, int]:
    """Runs ``fn()`` and returns its result and the largest total of bytes in tensors it created that were alive at
    one time (the same exact count as :func:`peak_forward_memory`; a training step's activations, gradients and
    temporaries).

    Example:
        >>> _, peak = peak_allocated(lambda: torch.zeros(1000).sum())
        >>> peak >= 4000
        True
    """
    tracker = _AllocationTracker()
    with tracker:
        out = fn()
    return out, tracker.peak
