"""Whole-model capture: one real forward pass recorded call by call, for analyses that must see the graph of any
model that runs (dependency analysis for structured pruning, Conv->BatchNorm pairs for folding).

Why not ``torch.fx``: symbolic tracing fails on the Python control flow that real models have (Hugging Face
forwards branch on shapes, configs and cache objects). ``torch.export`` (non-strict) runs the real Python, but
lowers every call to ATen (``linear`` becomes ``t`` + ``addmm``, norms become their native kernels) and needs
shape-constraint declarations for dynamic inputs. A :class:`~torch.overrides.TorchFunctionMode` sees every torch
function and tensor method at the level the model's author wrote it (``F.linear``, ``view``, ``permute``,
``scaled_dot_product_attention``), on real tensors with real shapes, whatever Python runs around them: the forward
is *executed*, so data-dependent branches simply take the path of the example inputs.

The capture also records which module attribute a shape argument came from: during the pass every ``int``
attribute of every module is a :class:`SizeInt` (an ``int`` that remembers its owner), so a ``view(b, t,
self.num_heads, self.head_dim)`` tells which attributes hard-code which axis.

Example:
    >>> import torch
    >>> from torch import nn
    >>> cap = capture(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), torch.zeros(2, 3))
    >>> [c.name for c in cap.calls]
    ['linear', 'relu']
    >>> cap.param_key(cap.calls[0].args[1])
    '0.weight'
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from effdl.core.modules import eval_mode

__all__ = ["METADATA_OPS", "Call", "Capture", "SizeInt", "batchnorm_pairs", "capture", "flatten_tensors"]

log = logging.getLogger(__name__)


class SizeInt(int):
    """An ``int`` module attribute during a capture: remembers ``(module, attribute)`` so that shape arguments can be
    traced back to the attribute that hard-codes them. Arithmetic on it yields plain ints."""

    owner: tuple[str, str]

    def __new__(cls, value: int, owner: tuple[str, str]) -> SizeInt:
        obj = super().__new__(cls, value)
        obj.owner = owner
        return obj

    def __reduce__(self):  # deep copies and pickles see a plain int
        return (int, (int(self),))


@dataclasses.dataclass
class Call:
    """One recorded call.

    Attributes:
        name: normalized op name (``"linear"``, ``"view"``, ``"getitem"``, ``"add"``, ...), or ``"module"`` for a
            leaf module recorded whole.
        func: the function (or the module, for ``"module"``).
        args: positional arguments as passed (tensors included).
        kwargs: keyword arguments.
        output: what the call returned.
        scope: the innermost module running when the call was made (``""`` for the model itself).
    """

    name: str
    func: Any
    args: tuple
    kwargs: dict
    output: Any
    scope: str


@dataclasses.dataclass
class Capture:
    """The record of one forward pass: calls in order, the model's inputs and output, and which tensors are the
    model's parameters and buffers.

    Attributes:
        calls: every torch call, in execution order.
        inputs: the positional inputs.
        output: what the model returned.
        keys: ``id(tensor) -> state_dict key`` of every parameter and buffer (the first name of a shared one).
        aliases: key -> every state_dict key naming the same tensor (tied weights), for keys with more than one.
    """

    calls: list[Call]
    inputs: tuple
    output: Any
    keys: dict[int, str]
    aliases: dict[str, list[str]]

    def param_key(self, t: Any) -> str | None:
        """The state_dict key of ``t`` if it is one of the model's parameters or buffers."""
        return self.keys.get(id(t)) if isinstance(t, torch.Tensor) else None


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", None)
    if name == "__get__":  # a tensor property (shape, T, data, ...): name it after the property
        owner = getattr(func, "__self__", None)
        return "attr." + str(getattr(owner, "__name__", "?"))
    if name is None:
        return type(func).__name__
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name.startswith("i") and name[1:] in _INPLACE_DUNDER:
            return name[1:] + "_"
    return name


_INPLACE_DUNDER = {"add", "sub", "mul", "truediv", "floordiv", "and", "or", "xor", "pow", "mod"}


class _Recorder(TorchFunctionMode):
    def __init__(self, calls: list[Call], scope: list[str], muted: list[int]) -> None:
        super().__init__()
        self.calls, self.scope, self.muted = calls, scope, muted

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.muted[0]:
            self.calls.append(Call(_op_name(func), func, tuple(args), dict(kwargs), out, self.scope[-1]))
        return out


@contextlib.contextmanager
def _size_ints(model: nn.Module) -> Iterator[None]:
    """Every plain ``int`` attribute of every module becomes a :class:`SizeInt` for the duration."""
    saved: list[tuple[nn.Module, str, int]] = []
    for name, m in model.named_modules():
        for attr, v in list(vars(m).items()):
            if type(v) is int and not attr.startswith("__"):
                saved.append((m, attr, v))
                m.__dict__[attr] = SizeInt(v, (name, attr))
    try:
        yield
    finally:
        for m, attr, v in saved:
            if isinstance(m.__dict__.get(attr), SizeInt):
                m.__dict__[attr] = v


def capture(
    model: nn.Module,
    example_inputs: Any,
    *,
    leaf: Callable[[str, nn.Module], bool] | None = None,
) -> Capture:
    """Runs ``model`` once on ``example_inputs`` (eval mode, no gradients) and records every torch call.

    Args:
        model: any module that runs on the inputs.
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        leaf: ``leaf(name, module)`` -> record this module as one ``"module"`` call instead of the calls inside it.

    Returns:
        The :class:`Capture`.
    """
    if isinstance(example_inputs, dict):
        args, kwargs = (), dict(example_inputs)
    else:
        args, kwargs = (example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)), {}
    calls: list[Call] = []
    scope = [""]
    muted = [0]  # depth inside a leaf module
    names = {id(m): n for n, m in model.named_modules()}
    handles = []

    def pre(m: nn.Module, a: tuple, kw: dict) -> None:
        name = names.get(id(m), "?")
        scope.append(name)
        if leaf is not None and name and leaf(name, m):
            muted[0] += 1

    def post(m: nn.Module, a: tuple, kw: dict, out: Any) -> None:
        name = scope.pop()
        if leaf is not None and name and leaf(name, m):
            muted[0] -= 1
            if not muted[0]:
                calls.append(Call("module", m, tuple(a), dict(kw), out, name))

    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m.register_forward_hook(post, with_kwargs=True))
    try:
        with eval_mode(model), torch.no_grad(), _size_ints(model), _Recorder(calls, scope, muted):
            output = model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    keys: dict[int, str] = {}
    aliases: dict[str, list[str]] = {}
    for key, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        first = keys.setdefault(id(t), key)
        if first != key:
            aliases.setdefault(first, [first]).append(key)
    log.debug("captured %d calls", len(calls))
    return Capture(calls, args if not kwargs else (kwargs,), output, keys, aliases)


def flatten_tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a nested structure of tuples, lists, dicts and dataclass-like outputs (Hugging Face's
    ``ModelOutput`` is a dict), in order.

    Example:
        >>> len(flatten_tensors({"a": torch.zeros(1), "b": (torch.zeros(2), 3)}))
        2
    """
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in flatten_tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in flatten_tensors(v)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [t for f in dataclasses.fields(obj) for t in flatten_tensors(getattr(obj, f.name))]
    return []


#: ops that read a tensor's metadata, not its values (they are not consumers of its data)
METADATA_OPS = frozenset({
    "size", "dim", "numel", "attr.shape", "attr.dtype", "attr.device", "attr.ndim", "attr.is_cuda",
    "attr.requires_grad", "attr.layout", "attr.is_sparse", "attr.is_quantized", "attr.is_meta", "attr.grad_fn",
    "attr.names", "attr.is_leaf", "attr.grad", "is_floating_point", "is_complex", "stride", "data_ptr", "element_size",
    "is_contiguous", "get_device", "nelement", "storage_offset", "untyped_storage", "_set_grad_enabled",
    "attr.itemsize", "attr.nbytes", "dim_order", "is_inference", "is_same_size",
})  # fmt: skip


def consumers(cap: Capture) -> dict[int, list[Call]]:
    """id(tensor) -> the calls that read its values (metadata reads excluded; the model output counts as one)."""
    out: dict[int, list[Call]] = {}
    for call in cap.calls:
        if call.name in METADATA_OPS:
            continue
        for t in flatten_tensors([call.args, call.kwargs]):
            out.setdefault(id(t), []).append(call)
    for t in flatten_tensors(cap.output):
        out.setdefault(id(t), []).append(Call("output", None, (), {}, None, ""))
    return out


def batchnorm_pairs(model: nn.Module, example_inputs: Any, cap: Capture | None = None) -> list[tuple[str, str]]:
    """(layer, batchnorm) module names where a conv or linear layer's output is read only by that BatchNorm, found on
    one real forward.

    Example:
        >>> m = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU())
        >>> batchnorm_pairs(m, torch.zeros(2, 1, 8))
        [('0', '1')]
    """
    cap = cap or capture(model, example_inputs)
    users = consumers(cap)
    pairs = []
    for call in cap.calls:
        if call.name not in ("conv1d", "conv2d", "conv3d", "linear") or not isinstance(call.output, torch.Tensor):
            continue
        weight = cap.param_key(call.args[1] if len(call.args) > 1 else call.kwargs.get("weight"))
        readers = users.get(id(call.output), [])
        if weight is None or len(readers) != 1 or readers[0].name != "batch_norm":
            continue
        bn = readers[0]
        mean = cap.param_key(bn.args[1] if len(bn.args) > 1 else bn.kwargs.get("running_mean"))
        if mean is not None:
            pairs.append((weight.rpartition(".")[0], mean.rpartition(".")[0]))
    return pairs
