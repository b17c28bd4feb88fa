"""Function and method rules: how element-wise ops, concatenation, reshapes, permutes, reductions and indexing move
channel labels."""

from __future__ import annotations

import logging
import math
import operator
from typing import Any

import torch
import torch.fx

from effdl.prune.graph._state import _Info, _State

log = logging.getLogger(__name__)


def _keep_if_same(x: _Info | None, shape) -> _Info | None:
    """Passes ``x`` on when the output has the same rank and channel count (channel-wise ops)."""
    if x is None or shape is None:
        return None
    return x if x.dim < len(shape) and shape[x.dim] == len(x.labels) else None


_ELEMENTWISE_UNARY = {
    "relu",
    "relu_",
    "relu6",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "hardswish",
    "hardsigmoid",
    "hardtanh",
    "leaky_relu",
    "elu",
    "mish",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "clone",
    "contiguous",
    "detach",
    "float",
    "to",
    "type_as",
    "abs",
    "neg",
    "exp",
    "sqrt",
    "square",
    "clamp",
    "clamp_min",
    "clamp_max",
    "pow",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "interpolate",
    "upsample",
    "pad",
}
_ELEMENTWISE_BINARY = {"add", "sub", "mul", "truediv", "div", "maximum", "minimum", "iadd", "imul", "isub", "rsub"}
_RESHAPES = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten", "view_as", "reshape_as"}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "std", "var", "max", "min", "logsumexp"}


def _op_name(node: torch.fx.Node) -> str:
    target = node.target
    if node.op == "call_method":
        return str(target).removesuffix("_")  # in-place variants behave alike here
    return getattr(target, "__name__", str(target))


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = getattr(node, "meta", {}).get("tensor_meta") if isinstance(node, torch.fx.Node) else None
    if meta is None or not hasattr(meta, "shape"):
        return None
    return tuple(meta.shape)


def _normdim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def _binary(st: _State, node: torch.fx.Node, values: dict, shape) -> Any:
    if shape is None:
        _pin_all(st, node, values, "it yields no tensor")
        return None
    out_nd = len(shape)
    tracked: list[tuple[_Info, int]] = []
    others: list[tuple[int, ...]] = []
    for a in node.args:
        if isinstance(a, torch.fx.Node):
            v = values.get(a)
            s = _shape(a)
            if isinstance(v, _Info) and s is not None:
                tracked.append((v, v.dim + out_nd - len(s)))
            elif s is not None:
                others.append(s)
    if not tracked:
        return None
    dims = {d for _, d in tracked}
    sizes = {len(v.labels) for v, _ in tracked}
    if len(dims) != 1 or sizes != {shape[next(iter(dims))]}:
        for v, _ in tracked:
            st.pin(v.labels, f"{node.name} combines them with other dimensions")
        return None
    d = next(iter(dims))
    for s in others:  # an untracked per-channel operand (a parameter, the input) fixes the channels
        k = d - (out_nd - len(s))
        if 0 <= k < len(s) and s[k] != 1:
            for v, _ in tracked:
                st.pin(v.labels, f"{node.name} combines them with an untracked per-channel tensor")
            return None
    first = tracked[0][0]
    for v, _ in tracked[1:]:
        for a, b in zip(first.labels, v.labels, strict=True):
            st.union(a, b)
    return _Info(d, list(first.labels))


def _cat(st: _State, node: torch.fx.Node, values: dict, shape) -> Any:
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if shape is None or not isinstance(tensors, list | tuple):
        _pin_all(st, node, values, "it is not followed")
        return None
    dim = _normdim(dim, len(shape))
    infos = [values.get(t) if isinstance(t, torch.fx.Node) else None for t in tensors]
    tracked = [v for v in infos if isinstance(v, _Info)]
    if not tracked:
        return None
    if all(isinstance(v, _Info) and v.dim == dim for v in tracked):
        if dim == tracked[0].dim:
            labels: list[int] = []
            for t, v in zip(tensors, infos, strict=True):
                if isinstance(v, _Info):
                    labels.extend(v.labels)
                else:
                    s = _shape(t)
                    n = s[dim] if s is not None else 0
                    labels.extend(st.new(n, producer=node.name, pin=f"untracked input of {node.name}"))
            return _Info(dim, labels)
    # concatenation along another axis: the operands' channels line up one to one
    if all(isinstance(v, _Info) for v in infos) and len({v.dim for v in infos}) == 1:
        first = infos[0]
        if all(len(v.labels) == len(first.labels) for v in infos):
            for v in infos[1:]:
                for a, b in zip(first.labels, v.labels, strict=True):
                    st.union(a, b)
            return _Info(first.dim, list(first.labels))
    for v in tracked:
        st.pin(v.labels, f"{node.name} concatenates them with untracked tensors")
    return None


def _reshape(x: _Info, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> _Info | None:
    """Follows the channel axis through a reshape, if it survives as its own axis or is merged with the axes after
    it (flatten); returns None if it is split."""
    d, c = x.dim, in_shape[x.dim]
    before = math.prod(in_shape[:d])
    acc = 1
    for j, size in enumerate(out_shape):
        if acc == before and size == c:
            return _Info(j, list(x.labels))
        if acc == before and size % c == 0 and size > c:
            # merged with the following axes: (.., C, A, B, ..) -> (.., C*A*B, ..); channel i spans i*A*B ... (i+1)*A*B
            inner = size // c
            if math.prod(in_shape[d + 1 :]) % inner == 0 and _merges_following(in_shape, d, inner):
                return _Info(j, [lab for lab in x.labels for _ in range(inner)])
            return None
        acc *= size
        if acc > before and acc != before:
            # the output axis j started before the channel axis: merged with earlier axes
            break
    return None


def _merges_following(in_shape: tuple[int, ...], d: int, inner: int) -> bool:
    acc = 1
    for size in in_shape[d + 1 :]:
        acc *= size
        if acc == inner:
            return True
        if acc > inner:
            return False
    return inner == 1


def _permute(x: _Info, node: torch.fx.Node, ndim: int) -> _Info | None:
    name = _op_name(node)
    args = list(node.args[1:])
    if name == "permute":
        perm = args[0] if len(args) == 1 and isinstance(args[0], list | tuple) else args
        if not perm and "dims" in node.kwargs:
            perm = node.kwargs["dims"]
        perm = [_normdim(p, ndim) for p in perm]
        return _Info(perm.index(x.dim), x.labels) if x.dim in perm else None
    if name in ("transpose", "swapaxes", "swapdims"):
        a = _normdim(args[0] if args else node.kwargs["dim0"], ndim)
        b = _normdim(args[1] if len(args) > 1 else node.kwargs["dim1"], ndim)
        d = b if x.dim == a else a if x.dim == b else x.dim
        return _Info(d, x.labels)
    if name in ("t",) and ndim == 2:
        return _Info(1 - x.dim, x.labels)
    return None


def _reduction(st: _State, x: _Info, node: torch.fx.Node, in_nd: int, shape) -> _Info | None:
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 and isinstance(node.args[2], bool) else False)
    if dims is None or isinstance(dims, torch.fx.Node):
        st.pin(x.labels, f"{node.name} reduces over them")
        return None
    dims = [dims] if isinstance(dims, int) else list(dims)
    dims = [_normdim(d, in_nd) for d in dims]
    if x.dim in dims:
        st.pin(x.labels, f"{node.name} reduces over them")
        return None
    if _op_name(node) in ("max", "min"):
        st.pin(x.labels, f"{node.name} returns values and indices")  # not followed; kept whole
        return None
    new = x.dim if keep else x.dim - sum(d < x.dim for d in dims)
    return _Info(new, x.labels)


def _getitem(st: _State, x: _Info, index: Any, in_nd: int, shape) -> _Info | None:
    if not isinstance(index, tuple):
        index = (index,)
    if any(isinstance(i, torch.fx.Node | torch.Tensor | list) for i in index):
        st.pin(x.labels, "advanced indexing")
        return None
    n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
    in_dim = out_dim = 0
    expanded: list[Any] = []
    for i in index:
        if i is Ellipsis:
            expanded.extend([slice(None)] * (in_nd - n_real))
        else:
            expanded.append(i)
    for i in expanded:
        if i is None:
            out_dim += 1
            continue
        if in_dim == x.dim:
            if isinstance(i, slice) and i == slice(None):
                return _Info(out_dim, x.labels)
            st.pin(x.labels, "indexing along the channel axis")
            return None
        if isinstance(i, int):
            in_dim += 1
        else:
            in_dim += 1
            out_dim += 1
    return _Info(out_dim + (x.dim - in_dim), x.labels)  # untouched trailing axes


def _function_rule(st: _State, node: torch.fx.Node, values: dict) -> Any:
    name = _op_name(node)
    shape = _shape(node)
    first = node.args[0] if node.args else None
    x = values.get(first) if isinstance(first, torch.fx.Node) else None
    x = x if isinstance(x, _Info) else None
    in_shape = _shape(first) if isinstance(first, torch.fx.Node) else None
    if node.target is operator.getitem:
        v = values.get(first)
        if isinstance(v, tuple | list):
            idx = node.args[1]
            return v[idx] if isinstance(idx, int) and idx < len(v) else None
        if x is not None and in_shape is not None:
            return _getitem(st, x, node.args[1], len(in_shape), shape)
        return None
    if name in _ELEMENTWISE_BINARY or node.target in (torch.add, torch.sub, torch.mul, torch.div):
        return _binary(st, node, values, shape)
    if name in ("cat", "concat", "concatenate"):
        return _cat(st, node, values, shape)
    if x is None:
        _pin_all(st, node, values, "it is not followed with an untracked first operand")
        return None
    if name in _ELEMENTWISE_UNARY:
        kept = _keep_if_same(x, shape)
        if kept is None:
            st.pin(x.labels, f"{node.name} changes the channel axis")
        return kept
    if name in ("softmax", "log_softmax"):
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if dim is not None and in_shape is not None and _normdim(dim, len(in_shape)) != x.dim:
            return x
        st.pin(x.labels, f"{node.name} normalizes over them")
        return None
    if name in _RESHAPES and in_shape is not None and shape is not None:
        out = _reshape(x, in_shape, shape)
        if out is None:
            st.pin(x.labels, f"{node.name} splits or mixes the channel axis")
        return out
    if name in ("permute", "transpose", "swapaxes", "swapdims", "t") and in_shape is not None:
        out = _permute(x, node, len(in_shape))
        if out is None:
            st.pin(x.labels, f"{node.name} moves the channel axis in a way not followed")
        return out
    if name in ("expand", "expand_as") and shape is not None and in_shape is not None:
        d = x.dim + len(shape) - len(in_shape)
        if shape[d] == len(x.labels):
            return _Info(d, x.labels)
    if name in _REDUCTIONS and in_shape is not None:
        return _reduction(st, x, node, len(in_shape), shape)
    if name in ("size", "dim", "numel") or (name == "getattr" and node.args[1] in _METADATA):
        return None  # metadata, not channel data
    _pin_all(st, node, values, f"{node.name} ({name}) is not followed by the analysis")
    return None


_METADATA = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout"}


def _pin_all(st: _State, node: torch.fx.Node, values: dict, reason: str) -> None:
    """Pins the labels of every tracked tensor ``node`` reads (what flows into an op that is not followed)."""
    for v in _flatten_values(values, [list(node.args), dict(node.kwargs)]):
        st.pin(v.labels, reason if reason.startswith(node.name) else f"{node.name}: {reason}")


def _flatten_values(values: dict, arg: Any) -> list[_Info]:
    out: list[_Info] = []
    if isinstance(arg, torch.fx.Node):
        v = values.get(arg)
        if isinstance(v, _Info):
            out.append(v)
        elif isinstance(v, tuple | list):
            out.extend(x for x in v if isinstance(x, _Info))
    elif isinstance(arg, list | tuple):
        for a in arg:
            out.extend(_flatten_values(values, a))
    elif isinstance(arg, dict):
        for a in arg.values():
            out.extend(_flatten_values(values, a))
    return out
