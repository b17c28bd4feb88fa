"""Function rules: how each captured torch call moves, creates, unites or pins channel labels.

Rules see real tensors (the capture ran the model), so every shape is exact. Anything a rule cannot follow exactly
pins the labels it touches: the analysis may keep too much, never remove a channel it cannot remove.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from effdl.core.errors import ConfigError
from effdl.measure.capture import METADATA_OPS, Call, Capture, SizeInt, flatten_tensors
from effdl.prune.graph._model import Site
from effdl.prune.graph._state import Binding, Info, ParamView, State

log = logging.getLogger(__name__)


class Ctx:
    """What the rules work on: the state, the capture, and the label value of every tensor seen so far."""

    def __init__(self, st: State, cap: Capture) -> None:
        self.st, self.cap = st, cap
        self.values: dict[int, Any] = {}
        self._params = cap.keys

    def value(self, t: Any) -> Info | ParamView | None:
        if not isinstance(t, torch.Tensor):
            return None
        v = self.values.get(id(t))
        if v is None and id(t) in self._params:
            return ParamView(self._params[id(t)], tuple(range(t.dim())))
        return v

    def info(self, t: Any) -> Info | None:
        v = self.value(t)
        return v if isinstance(v, Info) else None

    def pview(self, t: Any) -> ParamView | None:
        v = self.value(t)
        return v if isinstance(v, ParamView) else None


def _module_of(key: str) -> str:
    return key.rpartition(".")[0]


def _tensor_of(key: str) -> str:
    return key.rpartition(".")[2]


def _site(pv: ParamView, dim: int, role: str) -> Site:
    return Site(_module_of(pv.key), _tensor_of(pv.key), dim, role)


def pin_call(ctx: Ctx, call: Call, reason: str) -> None:
    """Pins the labels of every tensor ``call`` reads."""
    for t in flatten_tensors([call.args, call.kwargs]):
        v = ctx.info(t)
        if v is not None:
            ctx.st.pin(v.arr, reason)


def _where(call: Call) -> str:
    return f"{call.name} in {call.scope}" if call.scope else call.name


def _norm_axis(d: int, nd: int) -> int:
    return d + nd if d < 0 else d


def _arg(call: Call, i: int, name: str, default: Any = None) -> Any:
    if len(call.args) > i:
        return call.args[i]
    return call.kwargs.get(name, default)


# ---------------------------------------------------------------------------------------------------------- helpers
def _drop_axis(info: Info, pos: int, arr: np.ndarray) -> Info | None:
    """``info`` with its ``pos``-th labelled axis removed (already collapsed into ``arr``)."""
    axes = info.axes[:pos] + info.axes[pos + 1 :]
    return Info(axes, arr) if axes else None


def _collapse_or_pin(ctx: Ctx, info: Info, axis: int, reason: str, *, heads: bool = False) -> Info | None:
    """An op mixes the labels along tensor ``axis``: if the tensor has other labelled axes, unite along it (the
    other axes stay removable as whole slices); else pin."""
    pos = info.axes.index(axis)
    if len(info.axes) == 1:
        ctx.st.pin(info.arr, reason)
        return None
    arr = ctx.st.collapse(info.arr, pos, heads=heads)
    return _drop_axis(info, pos, arr)


def _same_on_labelled(info: Info, in_shape: tuple, out_shape: tuple) -> bool:
    return len(in_shape) == len(out_shape) and all(in_shape[a] == out_shape[a] for a in info.axes)


def _bind_sizes(ctx: Ctx, sizes: Any, out: Info | None, first_axis: int = 0) -> None:
    """Records the module attributes used as sizes: ``sizes[i]`` is the size of output axis ``first_axis + i``."""
    if out is None:
        return
    flat = list(sizes) if isinstance(sizes, list | tuple | torch.Size) else [sizes]
    for i, s in enumerate(flat):
        axis = first_axis + i
        if isinstance(s, SizeInt) and axis in out.axes:
            pos = out.axes.index(axis)
            along = np.moveaxis(out.arr, pos, 0).reshape(out.arr.shape[pos], -1)
            ctx.st.bindings.append(Binding(s.owner[0], s.owner[1], int(s), [sorted(set(r)) for r in along.tolist()]))


# ---------------------------------------------------------------------------------------------------- elementwise
_UNARY = {
    "relu", "relu_", "relu6", "gelu", "silu", "silu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardswish",
    "hardsigmoid", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "mish",
    "logsigmoid", "softsign", "softplus", "tanhshrink", "threshold", "dropout", "dropout1d", "dropout2d", "dropout3d",
    "alpha_dropout", "feature_alpha_dropout", "clone", "contiguous", "detach", "detach_", "float", "half", "double",
    "bfloat16", "to", "type", "type_as", "abs", "abs_", "neg", "neg_", "exp", "exp_", "log", "log_", "sqrt", "rsqrt",
    "square", "sin", "cos", "reciprocal", "sign", "erf", "erf_", "clamp", "clamp_", "clamp_min", "clamp_max", "clip",
    "nan_to_num", "requires_grad_", "attr.data", "bool", "int", "long", "positive", "round", "floor", "ceil",
    "trunc", "frac", "log1p", "expm1", "exp2", "sinh", "cosh", "asinh", "atanh", "logit", "gelu_", "square_",
    "sqrt_", "rsqrt_", "masked_fill", "masked_fill_", "fill_", "zero_",
}  # fmt: skip
_BINARY = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "true_divide", "truediv", "floordiv", "floor_divide",
    "rsub", "radd", "rmul", "rtruediv", "rdiv", "maximum", "minimum", "fmax", "fmin", "where", "eq", "ne", "lt", "le",
    "gt", "ge", "logical_and", "logical_or", "logical_xor", "logical_not", "and", "or", "xor", "pow", "pow_", "rpow",
    "fmod", "remainder", "mod", "atan2", "lerp", "lerp_", "addcmul", "addcmul_", "addcdiv", "addcdiv_", "hypot",
    "copysign", "float_power", "bitwise_and", "bitwise_or", "bitwise_not", "isnan", "isinf",
    "isfinite", "neg",
}  # fmt: skip
_PASS_SPATIAL = {
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "lp_pool1d", "lp_pool2d", "interpolate", "upsample", "upsample_nearest", "upsample_bilinear",
    "max_pool1d_with_indices", "max_pool2d_with_indices", "fractional_max_pool2d", "fn",
}  # fmt: skip
_PARAM_PASS = {"to", "float", "half", "double", "bfloat16", "contiguous", "clone", "detach", "type_as", "attr.data"}


def _elementwise(ctx: Ctx, call: Call, operands: list[Any], out: torch.Tensor) -> Info | None:
    """Broadcasting elementwise op: the operands' labels are united where they meet; the result carries the
    labels of the operand with the most labelled axes."""
    items = [(tuple(t.shape), ctx.value(t)) for t in operands if isinstance(t, torch.Tensor)]
    return _broadcast(ctx, call, items, len(out.shape))


def _broadcast(ctx: Ctx, call: Call, items: list[tuple[tuple, Any]], nd: int) -> Info | None:
    """``items``: (shape, labels or parameter view) of each operand, right-aligned to ``nd`` output axes."""
    st = ctx.st
    labelled: list[Info] = []
    others: list[tuple[tuple, ParamView | None]] = []
    for shape, v in items:
        shift = nd - len(shape)
        if isinstance(v, Info):
            labelled.append(v.shifted(shift))
        else:
            others.append((shape, v if isinstance(v, ParamView) else None))
    if not labelled:
        return None
    carrier = max(labelled, key=lambda v: len(v.axes))
    for v in labelled:
        if v is carrier:
            continue
        if not set(v.axes) <= set(carrier.axes):
            for w in labelled:
                st.pin(w.arr, f"{_where(call)} combines channels of different axes")
            return None
        st.union_arrays(carrier.arr, _expand(v, carrier.axes))
    result: Info | None = carrier
    for shape, pv in others:
        shift = nd - len(shape)
        for k in range(len(shape)):
            axis = k + shift
            if result is None or axis not in result.axes or shape[k] == 1:
                continue
            param_dim = pv.dims[k] if pv is not None else None
            if param_dim is not None and len(result.axes) == 1:
                st.use(result.arr, _site(pv, param_dim, "norm"))  # a per-channel parameter follows the channels
                continue
            why = "a per-channel tensor that is not a parameter" if pv is None else "a parameter shared across them"
            result = _collapse_or_pin(ctx, result, axis, f"{_where(call)} combines them with {why}")
    return result


def _expand(v: Info, axes: tuple[int, ...]) -> np.ndarray:
    """``v.arr`` laid out over ``axes`` (a superset of ``v.axes``), with singleton axes for the missing ones."""
    shape = [v.arr.shape[v.axes.index(a)] if a in v.axes else 1 for a in axes]
    return v.arr.reshape(shape)


def _rule_unary(ctx: Ctx, call: Call) -> Any:
    x = call.args[0] if call.args else call.kwargs.get("input")
    out = call.output
    if not isinstance(out, torch.Tensor) or not isinstance(x, torch.Tensor):
        pin_call(ctx, call, f"{_where(call)} is not followed")
        return None
    v = ctx.value(x)
    if isinstance(v, ParamView):
        return v if call.name in _PARAM_PASS and out.shape == x.shape else None
    if v is None:
        return None
    if _same_on_labelled(v, tuple(x.shape), tuple(out.shape)):
        return v
    ctx.st.pin(v.arr, f"{_where(call)} changes the channel axis")
    return None


def _rule_binary(ctx: Ctx, call: Call) -> Any:
    out = call.output
    if not isinstance(out, torch.Tensor):
        pin_call(ctx, call, f"{_where(call)} is not followed")
        return None
    operands = [a for a in call.args if isinstance(a, torch.Tensor)]
    operands += [a for k, a in call.kwargs.items() if isinstance(a, torch.Tensor) and k != "out"]
    return _elementwise(ctx, call, operands, out)  # a where() condition takes part like any operand


def _rule_spatial(ctx: Ctx, call: Call) -> Any:
    """Pooling and resizing: act on the axes after the channel axis."""
    x = call.args[0] if call.args else call.kwargs.get("input")
    out = call.output[0] if isinstance(call.output, tuple) else call.output
    v = ctx.info(x)
    if v is None or not isinstance(out, torch.Tensor):
        return None
    if all(a < 2 for a in v.axes) and _same_on_labelled(v, tuple(x.shape), tuple(out.shape)):
        return (v, None) if isinstance(call.output, tuple) else v
    ctx.st.pin(v.arr, f"{_where(call)} resizes the channel axis")
    return None


def _rule_axis_op(axes_of: Callable[[Call, int], list[int] | None]) -> Callable:
    """Ops that act along some axes (roll, flip, cumsum, sort, pad): pins labels on those axes."""

    def rule(ctx: Ctx, call: Call) -> Any:
        x = call.args[0] if call.args else call.kwargs.get("input")
        out = call.output[0] if isinstance(call.output, tuple) else call.output
        v = ctx.info(x)
        if v is None or not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor):
            return None
        axes = axes_of(call, x.dim())
        if axes is None or any(a in v.axes for a in axes) or not _same_on_labelled(v, tuple(x.shape), tuple(out.shape)):
            ctx.st.pin(v.arr, f"{_where(call)} acts along the channel axis")
            return None
        return (v, None) if isinstance(call.output, tuple) else v

    return rule


def _dims_arg(call: Call, nd: int, pos: int = 1, name: str = "dims") -> list[int] | None:
    d = _arg(call, pos, name)
    if d is None:
        return None
    d = [d] if isinstance(d, int) else list(d)
    return [_norm_axis(int(a), nd) for a in d]


def _pad_axes(call: Call, nd: int) -> list[int] | None:
    pad = _arg(call, 1, "pad")
    if pad is None:
        return None
    return [nd - 1 - i // 2 for i, p in enumerate(pad) if p]


def _prelu(ctx: Ctx, call: Call) -> Any:
    x, w = call.args[0], _arg(call, 1, "weight")
    v, pv = ctx.info(x), ctx.pview(w)
    if v is None:
        return None
    if isinstance(w, torch.Tensor) and w.numel() == 1:
        return v
    if pv is not None and v.axes == (1,):
        ctx.st.use(v.arr, _site(pv, pv.dims[0] or 0, "norm"))
        return v
    ctx.st.pin(v.arr, f"{_where(call)} has one slope per channel that is not followed")
    return None


# ------------------------------------------------------------------------------------------------------- reshapes
def _runs(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Splits two shapes of equal size into runs of axes with equal products (how a reshape regroups axes)."""
    runs: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        ra, rb, pa, pb = [i], [j], a[i], b[j]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb and i < len(a):
                pa *= a[i]
                ra.append(i)
                i += 1
            elif pb < pa and j < len(b):
                pb *= b[j]
                rb.append(j)
                j += 1
            else:
                return None
        runs.append((ra, rb))
    if not runs:
        return None
    runs[-1][0].extend(range(i, len(a)))  # trailing size-1 axes
    runs[-1][1].extend(range(j, len(b)))
    return runs


def reshape_labels(
    ctx: Ctx, v: Info, in_shape: tuple[int, ...], out_shape: tuple[int, ...], where: str
) -> Info | None:
    """Follows labels through a reshape: axes merged or split keep their labels (a split into several labelled
    axes is a *grid*: its units must be whole slices along one of them)."""
    st = ctx.st
    runs = _runs(in_shape, out_shape)
    if runs is None or 0 in in_shape:
        st.pin(v.arr, f"{where} reshapes in a way not followed")
        return None
    # the label array over every axis of the runs that hold labels (unlabelled axes broadcast), run by run
    full_in = [s for ra, _ in runs if any(a in v.axes for a in ra) for s in (in_shape[a] for a in ra)]
    in_axes = [a for ra, _ in runs if any(a in v.axes for a in ra) for a in ra]
    block = _expand(v, tuple(in_axes))
    block = np.broadcast_to(block, full_in)
    if block.size > 50_000_000:
        st.pin(v.arr, f"{where} merges too many axes to follow")
        return None
    out_axes = [b for ra, rb in runs if any(a in v.axes for a in ra) for b in rb]
    block = block.reshape([out_shape[b] for b in out_axes])
    keep: list[int] = []
    for pos in range(block.ndim):
        if block.shape[pos] > 1 and not (block == block.take([0], axis=pos)).all():
            keep.append(pos)
    if not keep:
        st.pin(v.arr, f"{where} leaves a channel axis of size 1")
        return None
    index = tuple(slice(None) if p in keep else 0 for p in range(block.ndim))
    arr = np.ascontiguousarray(block[index])
    new_axes = tuple(out_axes[p] for p in keep)
    for _, rb in runs:  # an axis split into several labelled ones is a grid
        split = [new_axes.index(b) for b in rb if b in new_axes]
        if len(split) > 1:
            st.grids.append((np.moveaxis(arr, split, list(range(len(split)))), len(split), where))
    return Info(new_axes, arr)


def _reshape_param(pv: ParamView, in_shape: tuple, out_shape: tuple) -> ParamView | None:
    """A reshape of a parameter that only adds or removes size-1 axes keeps track of its dimensions."""
    src = [(s, d) for s, d in zip(in_shape, pv.dims, strict=True) if s != 1]
    if [s for s, _ in src] != [s for s in out_shape if s != 1]:
        return None
    it = iter(d for _, d in src)
    return ParamView(pv.key, tuple(next(it) if s != 1 else None for s in out_shape))


def _rule_reshape(ctx: Ctx, call: Call) -> Any:
    x, out = call.args[0] if call.args else call.kwargs.get("input"), call.output
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor):
        return None
    v = ctx.value(x)
    if isinstance(v, ParamView):
        return _reshape_param(v, tuple(x.shape), tuple(out.shape))
    if v is None:
        return None
    res = reshape_labels(ctx, v, tuple(x.shape), tuple(out.shape), _where(call))
    if call.name in ("view", "reshape", "expand"):
        sizes = call.args[1:] if len(call.args) > 1 else call.kwargs.get("size", call.kwargs.get("shape", ()))
        if len(sizes) == 1 and isinstance(sizes[0], list | tuple | torch.Size):
            sizes = sizes[0]
        _bind_sizes(ctx, sizes, res)
    elif call.name == "unflatten":
        dim = _norm_axis(_arg(call, 1, "dim"), x.dim())
        _bind_sizes(ctx, _arg(call, 2, "sizes"), res, dim)
    return res


def _rule_expand(ctx: Ctx, call: Call) -> Any:
    x, out = call.args[0], call.output
    v = ctx.value(x)
    shift = out.dim() - x.dim()
    if isinstance(v, ParamView):
        return ParamView(v.key, (None,) * shift + tuple(d if x.shape[k] == out.shape[k + shift] else None
                                                        for k, d in enumerate(v.dims)))  # fmt: skip
    if v is None:
        return None
    moved = v.shifted(shift)
    if all(out.shape[a] == x.shape[a - shift] for a in moved.axes):
        return moved
    ctx.st.pin(v.arr, f"{_where(call)} repeats the channel axis")
    return None


def _permutation(call: Call, nd: int) -> list[int] | None:
    """``perm`` with ``out.axis j = in.axis perm[j]``."""
    name = call.name
    if name == "permute":
        p = call.args[1:] if len(call.args) > 1 else call.kwargs.get("dims", ())
        p = list(p[0]) if len(p) == 1 and isinstance(p[0], list | tuple) else list(p)
        return [_norm_axis(int(a), nd) for a in p]
    if name in ("transpose", "swapaxes", "swapdims", "transpose_"):
        a = _norm_axis(int(_arg(call, 1, "dim0")), nd)
        b = _norm_axis(int(_arg(call, 2, "dim1")), nd)
        p = list(range(nd))
        p[a], p[b] = p[b], p[a]
        return p
    if name in ("t", "attr.T") and nd <= 2:
        return list(range(nd))[::-1]
    if name == "attr.mT" and nd >= 2:
        p = list(range(nd))
        p[-1], p[-2] = p[-2], p[-1]
        return p
    if name == "movedim":
        src, dst = _arg(call, 1, "source"), _arg(call, 2, "destination")
        src = [src] if isinstance(src, int) else list(src)
        dst = [dst] if isinstance(dst, int) else list(dst)
        p = [None] * nd
        for s, d in zip(src, dst, strict=True):
            p[_norm_axis(d, nd)] = _norm_axis(s, nd)
        rest = iter(a for a in range(nd) if a not in [_norm_axis(s, nd) for s in src])
        return [q if q is not None else next(rest) for q in p]
    return None


def _rule_permute(ctx: Ctx, call: Call) -> Any:
    x = call.args[0]
    v = ctx.value(x)
    if v is None or not isinstance(x, torch.Tensor):
        return None
    p = _permutation(call, x.dim())
    if p is None:
        if isinstance(v, Info):
            ctx.st.pin(v.arr, f"{_where(call)} moves axes in a way not followed")
        return None
    if isinstance(v, ParamView):
        return ParamView(v.key, tuple(v.dims[q] for q in p))
    new_of = {q: j for j, q in enumerate(p)}
    order = sorted(range(len(v.axes)), key=lambda i: new_of[v.axes[i]])
    return Info(tuple(new_of[v.axes[i]] for i in order), np.ascontiguousarray(np.transpose(v.arr, order)))


def _rule_getitem(ctx: Ctx, call: Call) -> Any:
    x, index = call.args[0], call.args[1]
    v = ctx.value(x)
    if v is None or not isinstance(x, torch.Tensor):
        return None
    idx = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, torch.Tensor | list) or (i is not None and not isinstance(i, int | slice) and i is not
                                                   Ellipsis) for i in idx):  # fmt: skip
        if isinstance(v, Info):
            ctx.st.pin(v.arr, f"{_where(call)} indexes with tensors")
        return None
    nd = x.dim()
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    expanded: list[Any] = []
    for i in idx:
        if i is Ellipsis:
            expanded.extend([slice(None)] * (nd - n_real))
        else:
            expanded.append(i)
    expanded.extend([slice(None)] * (nd - sum(1 for i in expanded if i is not None)))
    in_axis = out_axis = 0
    mapping: dict[int, int] = {}  # in axis -> out axis, for axes that survive
    picks: dict[int, Any] = {}  # in axis -> int or slice applied to it
    for i in expanded:
        if i is None:
            out_axis += 1
            continue
        picks[in_axis] = i
        if not isinstance(i, int):
            mapping[in_axis] = out_axis
            out_axis += 1
        in_axis += 1
    if isinstance(v, ParamView):
        if any(not (isinstance(picks.get(a), slice) and picks[a] == slice(None)) for a in range(nd)):
            return None
        dims: list[int | None] = [None] * call.output.dim()
        for a, o in mapping.items():
            dims[o] = v.dims[a]
        return ParamView(v.key, tuple(dims))
    arr, axes = v.arr, []
    sel: list[Any] = []
    for a in v.axes:
        pick = picks.get(a, slice(None))
        if isinstance(pick, int):
            if len(v.axes) == 1:
                ctx.st.pin(v.arr, f"{_where(call)} picks one channel by its index")
                return None
            sel.append(pick)
            continue
        if pick != slice(None) and range(*pick.indices(x.shape[a])) != range(x.shape[a]) and len(v.axes) == 1:
            ctx.st.pin(v.arr, f"{_where(call)} takes part of the channel axis")
            return None
        sel.append(pick)
        axes.append(mapping[a])
    arr = arr[tuple(sel)]
    if not axes:
        return None
    return Info(tuple(axes), np.ascontiguousarray(arr))


def _rule_split(ctx: Ctx, call: Call) -> Any:
    x, outs = call.args[0], call.output
    v = ctx.info(x)
    if v is None or not isinstance(outs, tuple | list):
        return None
    nd = x.dim()
    name = call.name
    dim = _norm_axis(int(_arg(call, 1, "dim", 0)), nd) if name == "unbind" else _norm_axis(
        int(_arg(call, 2, "dim", 0)), nd)  # fmt: skip
    if dim not in v.axes:
        if name == "unbind":
            return [Info(tuple(a - (a > dim) for a in v.axes), v.arr) for _ in outs]
        return [v for _ in outs]
    pos = v.axes.index(dim)
    sizes = [1] * len(outs) if name == "unbind" else [o.shape[dim] for o in outs]
    if len(set(sizes)) == 1 and sum(sizes) == x.shape[dim] and len(outs) > 1:
        n, s = len(outs), sizes[0]
        moved = np.moveaxis(v.arr, pos, 0)
        grid = moved.reshape(n, s, *moved.shape[1:])
        if s > 1:
            ctx.st.grids.append((grid, 2, _where(call)))
        res: list[Info | None] = []
        for k in range(n):
            if name == "unbind":
                axes = tuple(a - (a > dim) for a in v.axes if a != dim)
                res.append(Info(axes, np.ascontiguousarray(grid[k][0])) if axes else None)
            else:
                res.append(Info(v.axes, np.ascontiguousarray(np.moveaxis(grid[k], 0, pos))))
        size_arg = _arg(call, 1, "split_size_or_sections")
        if name == "split" and isinstance(size_arg, SizeInt) and res[0] is not None:
            _bind_sizes(ctx, [size_arg], res[0], dim)
        return res
    if len(v.axes) == 1:
        ctx.st.pin(v.arr, f"{_where(call)} splits the channel axis unevenly")
        return None
    res, start = [], 0
    for s in sizes:
        sl = [slice(None)] * v.arr.ndim
        sl[pos] = slice(start, start + s)
        res.append(Info(v.axes, np.ascontiguousarray(v.arr[tuple(sl)])))
        start += s
    return res


def _rule_cat(ctx: Ctx, call: Call) -> Any:
    tensors = _arg(call, 0, "tensors")
    out = call.output
    stack = call.name == "stack"
    if not isinstance(tensors, list | tuple) or not isinstance(out, torch.Tensor):
        return None
    nd_in = tensors[0].dim() if tensors else 0
    dim = _norm_axis(int(_arg(call, 1, "dim", 0)), nd_in + stack)
    vals = [ctx.value(t) for t in tensors]
    infos = [v for v in vals if isinstance(v, Info)]
    if not infos:
        return None
    st = ctx.st
    if not stack and all(v.axes == (dim,) for v in infos):  # along the channel axis: labels are concatenated
        parts = []
        for t, v in zip(tensors, vals, strict=True):
            if isinstance(v, Info):
                parts.append(v.arr)
            else:
                parts.append(st.new(t.shape[dim], producer=call.scope, pin=f"untracked input of {_where(call)}"))
        return Info((dim,), np.concatenate(parts))
    if not stack and all(isinstance(v, Info) and v.axes == infos[0].axes for v in vals) and dim in infos[0].axes:
        pos = infos[0].axes.index(dim)  # a grid concatenated along one of its axes (rotary halves)
        return Info(infos[0].axes, np.concatenate([v.arr for v in infos], axis=pos))
    if any(dim in v.axes for v in infos):
        for v in infos:
            st.pin(v.arr, f"{_where(call)} concatenates them in a way not followed")
        return None
    # along another axis: the operands' channels meet one to one, as in an elementwise op
    items = []
    for t, v in zip(tensors, vals, strict=True):
        shape = list(t.shape)
        if stack:
            shape.insert(dim, 1)
            if isinstance(v, Info):
                v = Info(tuple(a + (a >= dim) for a in v.axes), v.arr)
            elif isinstance(v, ParamView):
                v = ParamView(v.key, (*v.dims[:dim], None, *v.dims[dim:]))
        shape[dim] = 1
        items.append((tuple(shape), v))
    return _broadcast(ctx, call, items, out.dim())


# ------------------------------------------------------------------------------------------------------ reductions
def _rule_reduce(ctx: Ctx, call: Call) -> Any:
    x = call.args[0] if call.args else call.kwargs.get("input")
    out = call.output
    v = ctx.info(x)
    if v is None or not isinstance(x, torch.Tensor):
        return None
    nd = x.dim()
    dims = _arg(call, 1, "dim")
    if call.name in ("norm",):
        dims = _arg(call, 2, "dim")
    if dims is None or isinstance(dims, torch.Tensor):  # a reduction over everything
        ctx.st.pin(v.arr, f"{_where(call)} reduces over them")
        return None
    dims = [dims] if isinstance(dims, int) else list(dims)
    dims = sorted(_norm_axis(int(d), nd) for d in dims)
    keep = bool(call.kwargs.get("keepdim", False) or (len(call.args) > 2 and call.args[2] is True))
    if isinstance(out, tuple) and call.name in ("max", "min", "median", "mode", "sort", "topk"):
        ctx.st.pin(v.arr, f"{_where(call)} returns indices")
        return None
    res: Info | None = v
    for d in dims:
        if res is not None and d in res.axes:
            res = _collapse_or_pin(ctx, res, d, f"{_where(call)} reduces over them")
    if res is None or keep:
        return res
    return Info(tuple(a - sum(d < a for d in dims) for a in res.axes), res.arr)


def _rule_softmax(ctx: Ctx, call: Call) -> Any:
    x = call.args[0] if call.args else call.kwargs.get("input")
    v = ctx.info(x)
    if v is None:
        return None
    dim = _arg(call, 1, "dim")
    if dim is None:
        ctx.st.pin(v.arr, f"{_where(call)} normalizes over them")
        return None
    d = _norm_axis(int(dim), x.dim())
    if d not in v.axes:
        return v
    return _collapse_or_pin(ctx, v, d, f"{_where(call)} normalizes over them")


def _rule_normalize(ctx: Ctx, call: Call) -> Any:  # F.normalize(x, p, dim)
    x = call.args[0]
    v = ctx.info(x)
    if v is None:
        return None
    d = _norm_axis(int(_arg(call, 2, "dim", 1)), x.dim())
    return v if d not in v.axes else _collapse_or_pin(ctx, v, d, f"{_where(call)} normalizes over them")


# -------------------------------------------------------------------------------------------------------- layers
def _new_outputs(ctx: Ctx, n: int, pv: ParamView | None, dim: int | None, bias: Any, producer: str) -> np.ndarray:
    labels = ctx.st.new(n, producer=producer)
    if pv is not None and dim is not None:
        ctx.st.use(labels, _site(pv, dim, "out"))
    bpv = ctx.pview(bias)
    if bpv is not None and bpv.dims and bpv.dims[-1] is not None:
        ctx.st.use(labels, _site(bpv, bpv.dims[-1], "out"))
    elif isinstance(bias, torch.Tensor):
        ctx.st.pin(labels, f"the bias of {producer} is computed at run time")
    return labels


def _rule_linear(ctx: Ctx, call: Call) -> Any:
    x, w, b = call.args[0], _arg(call, 1, "weight"), _arg(call, 2, "bias")
    out = call.output
    v, pv = ctx.info(x), ctx.pview(w)
    nd = out.dim()
    producer = _module_of(pv.key) if pv is not None else call.scope
    if pv is None or None in pv.dims:
        if v is not None:
            ctx.st.pin(v.arr, f"{_where(call)} uses a weight computed at run time")
        return Info((nd - 1,), ctx.st.new(out.shape[-1], producer=producer,
                                          pin=f"{_where(call)} uses a weight computed at run time"))  # fmt: skip
    rest: Info | None = None
    if v is not None:
        last = x.dim() - 1
        if last in v.axes:
            pos = v.axes.index(last)
            ctx.st.use(np.moveaxis(v.arr, pos, -1), _site(pv, pv.dims[1], "in"))
            if len(v.axes) > 1:
                rest = _drop_axis(v, pos, ctx.st.collapse(v.arr, pos))
        else:
            rest = v
    labels = _new_outputs(ctx, out.shape[-1], pv, pv.dims[0], b, producer)
    if rest is not None:  # channels on another axis pass through (a token-mixing layer), the new ones are kept
        ctx.st.pin(labels, f"{producer}'s input has channels on another axis")
        return Info(tuple(a + nd - x.dim() for a in rest.axes), rest.arr)
    return Info((nd - 1,), labels)


def _rule_conv(ctx: Ctx, call: Call) -> Any:
    x, w, b = call.args[0], _arg(call, 1, "weight"), _arg(call, 2, "bias")
    transposed = "transpose" in call.name
    groups = int(_arg(call, 7 if transposed else 6, "groups", 1))
    out = call.output
    v, pv = ctx.info(x), ctx.pview(w)
    st = ctx.st
    producer = _module_of(pv.key) if pv is not None else call.scope
    cin, cout = x.shape[1], out.shape[1]
    if v is not None and v.axes != (1,):
        st.pin(v.arr, f"{_where(call)} reads them along another axis")
        v = None
    if pv is None or pv.dims != tuple(range(w.dim())):
        if v is not None:
            st.pin(v.arr, f"{_where(call)} uses a weight computed at run time")
        return Info((1,), st.new(cout, producer=producer, pin=f"{_where(call)} uses a weight computed at run time"))
    in_dim, out_dim = (0, 1) if transposed else (1, 0)
    if not transposed and groups == cin and groups > 1:  # depthwise: each filter follows its input channel
        mult = cout // cin
        if v is None:
            fixed = "depthwise conv on an input whose channels are fixed"
            return Info((1,), st.new(cout, producer=producer, pin=fixed))
        st.use(v.arr, _site(pv, 0, "dw"), mult)
        bpv = ctx.pview(b)
        if bpv is not None:
            st.use(v.arr, _site(bpv, 0, "dw"), mult)
        return Info((1,), np.repeat(v.arr, mult))
    if groups > 1:
        reason = f"grouped convolution {producer} (groups={groups}) couples channels within groups"
        if v is not None:
            st.pin(v.arr, reason)
        return Info((1,), st.new(cout, producer=producer, pin=reason))
    if v is not None:
        st.use(v.arr, _site(pv, in_dim, "in"))
    labels = st.new(cout, producer=producer)
    st.use(labels, _site(pv, out_dim, "out"))
    bpv = ctx.pview(b)
    if bpv is not None:
        st.use(labels, _site(bpv, 0, "out"))
    return Info((1,), labels)


def _rule_embedding(ctx: Ctx, call: Call) -> Any:
    w = _arg(call, 1, "weight")
    pv = ctx.pview(w)
    out = call.output
    producer = _module_of(pv.key) if pv is not None else call.scope
    labels = ctx.st.new(out.shape[-1], producer=producer, pin=None if pv is not None else "embedding table computed")
    if pv is not None:
        ctx.st.use(labels, _site(pv, pv.dims[1], "out"))
    return Info((out.dim() - 1,), labels)


def _rule_batch_norm(ctx: Ctx, call: Call) -> Any:
    """batch_norm(x, running_mean, running_var, weight, bias, ...) / instance_norm(x, running_mean, running_var,
    weight, bias, ...): per-channel statistics and affine terms on axis 1 follow the channels."""
    x = call.args[0]
    v = ctx.info(x)
    if v is None:
        return None
    if v.axes != (1,):
        return _collapse_or_pin(ctx, v, 1, f"{_where(call)} normalizes another axis") if 1 in v.axes else v
    names = ("running_mean", "running_var", "weight", "bias")
    for i, name in enumerate(names, start=1):
        t = _arg(call, i, name)
        pv = ctx.pview(t)
        if pv is not None:
            ctx.st.use(v.arr, _site(pv, pv.dims[0] or 0, "stat" if name.startswith("running") else "norm"))
        elif isinstance(t, torch.Tensor) and t.numel() > 1:
            ctx.st.pin(v.arr, f"{_where(call)} uses per-channel tensors that are not parameters")
            return None
    return v


def _rule_group_norm(ctx: Ctx, call: Call) -> Any:
    x, groups = call.args[0], int(_arg(call, 1, "num_groups"))
    v = ctx.info(x)
    if v is None:
        return None
    c = x.shape[1]
    if v.axes != (1,) or groups != c:
        ctx.st.pin(v.arr, f"{_where(call)} normalizes over groups of {c // max(groups, 1)} channels")
        return None
    for i, name in ((2, "weight"), (3, "bias")):
        pv = ctx.pview(_arg(call, i, name))
        if pv is not None:
            ctx.st.use(v.arr, _site(pv, 0, "norm"))
    return v


def _rule_layer_norm(ctx: Ctx, call: Call) -> Any:
    x = call.args[0]
    v = ctx.info(x)
    if v is None:
        return None
    shape = _arg(call, 1, "normalized_shape")
    n = len(shape) if isinstance(shape, list | tuple | torch.Size) else 1
    res: Info | None = v
    for a in range(x.dim() - n, x.dim()):
        if res is not None and a in res.axes:
            # statistics over these channels: removing one (even a zero) changes every output
            res = _collapse_or_pin(ctx, res, a, f"{_where(call)} normalizes over these channels (mean/variance would "
                                   "change)")  # fmt: skip
    return res


def _rule_mha(ctx: Ctx, call: Call) -> Any:
    reason = (f"{_where(call)}: nn.MultiheadAttention's kernel needs q/k/v widths equal to embed_dim, so its heads "
              "and width are kept")  # fmt: skip
    pin_call(ctx, call, reason)
    out = call.output[0] if isinstance(call.output, tuple) else call.output
    key = ctx.cap.param_key(_arg(call, 11, "out_proj_weight"))
    if not isinstance(out, torch.Tensor) or key is None:
        return None
    labels = ctx.st.new(out.shape[-1], producer=_module_of(key), pin=reason)
    return [Info((out.dim() - 1,), labels), None] if isinstance(call.output, tuple) else Info((out.dim() - 1,), labels)


# ------------------------------------------------------------------------------------------------- contractions
class _Operand:
    """A matmul operand in letter space: ``letters`` name the labelled axes of ``arr`` (batch axes by output axis
    number, ``"k"`` for the contracted axis); ``param`` maps letters to the dimensions of a parameter."""

    def __init__(self, letters: tuple, arr: np.ndarray | None, param: tuple[ParamView, dict] | None, sizes: dict):
        self.letters, self.arr, self.param, self.sizes = letters, arr, param, sizes


def _operand(ctx: Ctx, t: torch.Tensor, letter_of: list) -> _Operand:
    v = ctx.value(t)
    sizes = {letter_of[i]: t.shape[i] for i in range(t.dim())}
    if isinstance(v, Info):
        return _Operand(tuple(letter_of[a] for a in v.axes), v.arr, None, sizes)
    if isinstance(v, ParamView):
        return _Operand((), None, (v, {letter_of[i]: d for i, d in enumerate(v.dims) if d is not None}), sizes)
    return _Operand((), None, None, sizes)


def _lay(op: _Operand, letters: tuple) -> np.ndarray:
    """``op.arr`` over ``letters`` (a superset of its own), singleton axes for the others."""
    perm = [op.letters.index(ell) for ell in letters if ell in op.letters]
    arr = np.transpose(op.arr, perm)
    return arr.reshape([op.arr.shape[op.letters.index(ell)] if ell in op.letters else 1 for ell in letters])


def _collapse_letter(ctx: Ctx, op: _Operand, letter: Any, *, heads: bool) -> None:
    pos = op.letters.index(letter)
    op.arr = ctx.st.collapse(op.arr, pos, heads=heads)
    op.letters = op.letters[:pos] + op.letters[pos + 1 :]
    if not op.letters:
        op.arr = None


def _contract(ctx: Ctx, a: _Operand, b: _Operand, where: str, *, m_bias: Any = None) -> tuple[tuple, np.ndarray] | None:
    """``a (.., n, k) @ b (.., k, m)`` in letter space (``n`` and ``m`` are the output's last two axis numbers).
    Returns ``(letters, arr)`` of the output's labels, or None."""
    st = ctx.st
    for op, other in ((a, b), (b, a)):
        if "k" in op.letters and other.arr is None:
            if other.param is not None and "k" in other.param[1] and len(op.letters) == 1:
                pv, dims = other.param
                st.use(op.arr, _site(pv, dims["k"], "in"))
                op.arr, op.letters = None, ()
            elif other.param is not None and "k" in other.param[1]:
                pv, dims = other.param
                k = op.letters.index("k")
                st.use(np.moveaxis(op.arr, k, -1), _site(pv, dims["k"], "in"))
                _collapse_letter(ctx, op, "k", heads=False)
            elif other.sizes.get("k", 1) > 1 and len(op.letters) == 1:
                st.pin(op.arr, f"{where} contracts them with an untracked tensor")
                op.arr, op.letters = None, ()
            else:
                _collapse_letter(ctx, op, "k", heads=False)
    if "k" in a.letters and "k" in b.letters:  # both sides labelled on the contracted axis: entries pair up
        letters = tuple(dict.fromkeys((*a.letters, *b.letters)))
        free_a = [ell for ell in a.letters if ell not in b.letters and ell != "k"]
        free_b = [ell for ell in b.letters if ell not in a.letters and ell != "k"]
        if free_a and free_b:
            st.pin(a.arr, f"{where} combines channels of different axes")
            st.pin(b.arr, f"{where} combines channels of different axes")
            return None
        st.union_arrays(_lay(a, letters), _lay(b, letters))
        if a.letters == ("k",) and b.letters == ("k",):  # plain channel pairs, nothing flows on
            return None
        for op in (a, b):
            if op.letters == ("k",):
                op.arr, op.letters = None, ()
            else:
                _collapse_letter(ctx, op, "k", heads=True)
    # free and batch axes
    if a.arr is not None and b.arr is not None:
        only_a = set(a.letters) - set(b.letters)
        only_b = set(b.letters) - set(a.letters)
        if only_a and only_b:
            st.pin(a.arr, f"{where} combines channels of different axes")
            st.pin(b.arr, f"{where} combines channels of different axes")
            return None
        carrier, other = (a, b) if len(a.letters) >= len(b.letters) else (b, a)
        st.union_arrays(carrier.arr, _lay(other, carrier.letters))
        result = (carrier.letters, carrier.arr)
    elif a.arr is not None:
        result = (a.letters, a.arr)
    elif b.arr is not None:
        result = (b.letters, b.arr)
    else:
        result = None
    if b.param is not None and "m" in b.param[1]:  # a weight: new output neurons
        pv, dims = b.param
        labels = _new_outputs(ctx, b.sizes["m"], pv, dims["m"], m_bias, _module_of(pv.key))
        if result is not None:
            st.pin(labels, f"{where}: its input has channels on another axis")
            return result
        return (("m",), labels)
    return result


def _letters(nd: int, out_nd: int, kind: str) -> list:
    """Letters of a matmul operand's axes: ``kind`` "a" (.., n, k) or "b" (.., k, m)."""
    shift = out_nd - nd
    letters: list = [i + shift for i in range(nd)]
    if kind == "a":
        letters[-1], letters[-2] = "k", "n"
    else:
        letters[-2], letters[-1] = "k", "m"
    return letters


def _to_info(result: tuple | None, out_nd: int) -> Info | None:
    if result is None:
        return None
    letters, arr = result
    axes = [out_nd - 2 if ell == "n" else out_nd - 1 if ell == "m" else ell for ell in letters]
    order = sorted(range(len(axes)), key=lambda i: axes[i])
    return Info(tuple(axes[i] for i in order), np.ascontiguousarray(np.transpose(arr, order)))


def _matmul(ctx: Ctx, call: Call, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor, bias: Any = None) -> Any:
    if x.dim() < 2 or y.dim() < 2:
        pin_call(ctx, call, f"{_where(call)} (a vector product) is not followed")
        return None
    nd = out.dim()
    a = _operand(ctx, x, _letters(x.dim(), nd, "a"))
    b = _operand(ctx, y, _letters(y.dim(), nd, "b"))
    if a.arr is None and b.arr is None and b.param is None:
        return None
    res = _to_info(_contract(ctx, a, b, _where(call), m_bias=bias), nd)
    if bias is not None and res is not None and ctx.info(bias) is not None:
        return _elementwise(ctx, call, [bias], out) or res
    return res


def _rule_matmul(ctx: Ctx, call: Call) -> Any:
    x, y = call.args[0], call.args[1]
    if call.name == "rmatmul":
        x, y = y, x
    return _matmul(ctx, call, x, y, call.output)


def _rule_addmm(ctx: Ctx, call: Call) -> Any:  # addmm(bias, x, w), baddbmm(bias, x, w)
    return _matmul(ctx, call, call.args[1], call.args[2], call.output, bias=call.args[0])


def _rule_sdpa(ctx: Ctx, call: Call) -> Any:
    """scaled_dot_product_attention(q, k, v): scores = q @ k^T over the last axis, output = softmax(scores) @ v;
    with fewer key/value heads than query heads (grouped-query attention) each key/value head serves a block of
    query heads."""
    q, k, v = call.args[0], _arg(call, 1, "key"), _arg(call, 2, "value")
    out = call.output
    nd = q.dim()
    where = _where(call)
    hq, hk = (q.shape[-3], k.shape[-3]) if nd >= 3 else (1, 1)
    rep = hq // hk if hk and hq % hk == 0 else 1

    def repeated(t: torch.Tensor) -> Info | None:
        info = ctx.info(t)
        if info is None or rep == 1 or (nd - 3) not in info.axes:
            return info
        return Info(info.axes, np.repeat(info.arr, rep, axis=info.axes.index(nd - 3)))

    kinfo, vinfo = repeated(k), repeated(v)
    mask = _arg(call, 3, "attn_mask")
    if isinstance(mask, torch.Tensor) and (ctx.info(mask) is not None or (mask.dim() >= 3 and mask.shape[-3] > 1)):
        pin_call(ctx, call, f"{where} adds a bias of its own to each head (e.g. relative positions)")
        return None
    # scores (.., L, S) = q (.., L, E) @ k^T (.., E, S)
    qa = _Operand((), None, None, {})
    letters_q = _letters(nd, nd, "a")  # (.., n=L, k=E)
    qi = ctx.info(q)
    if qi is not None:
        qa = _Operand(tuple(letters_q[x] for x in qi.axes), qi.arr, None, {})
    kb = _Operand((), None, None, {})
    letters_kt = [*list(range(nd - 2)), "m", "k"]  # k is (.., S, E): S -> m, E -> k
    if kinfo is not None:
        kb = _Operand(tuple(letters_kt[x] for x in kinfo.axes), kinfo.arr, None, {})
    qa.sizes = {"k": q.shape[-1]}
    kb.sizes = {"k": k.shape[-1]}
    for op in (qa, kb):  # the key positions and query positions are not channels
        if any(ell in ("n", "m") for ell in op.letters):
            ctx.st.pin(op.arr, f"{where} attends over channels")
            return None
    scores = None
    if qa.arr is not None or kb.arr is not None:
        if qa.arr is not None and kb.arr is not None and "k" in qa.letters and "k" in kb.letters:
            letters = tuple(dict.fromkeys((*qa.letters, *kb.letters)))
            ctx.st.union_arrays(_lay(qa, letters), _lay(kb, letters))
        for op in (qa, kb):
            if op.arr is not None and "k" in op.letters:
                if len(op.letters) == 1:
                    ctx.st.pin(op.arr, f"{where}: query/key channels with no head axis")
                    op.arr, op.letters = None, ()
                else:
                    _collapse_letter(ctx, op, "k", heads=True)
        if qa.arr is not None and kb.arr is not None:
            ctx.st.union_arrays(qa.arr, _lay(kb, qa.letters)) if set(kb.letters) <= set(qa.letters) else ctx.st.pin(
                kb.arr, f"{where} combines heads of different axes")  # fmt: skip
        scores = qa if qa.arr is not None else kb if kb.arr is not None else None
    # out (.., L, Ev) = probs (.., L, S) @ v (.., S, Ev): batch axes (heads) meet
    if vinfo is None:
        if scores is not None:
            ctx.st.pin(scores.arr, f"{where}: values without channel labels")
        return None
    letters_v = [*list(range(nd - 2)), "k", "m"]
    vb = _Operand(tuple(letters_v[x] for x in vinfo.axes), vinfo.arr, None, {})
    if "k" in vb.letters:
        ctx.st.pin(vb.arr, f"{where} attends over channels")
        return None
    if scores is not None:
        if set(scores.letters) <= set(vb.letters):
            ctx.st.union_arrays(vb.arr, _lay(scores, vb.letters))
        else:
            ctx.st.pin(scores.arr, f"{where} combines heads of different axes")
            ctx.st.pin(vb.arr, f"{where} combines heads of different axes")
            return None
    if "m" in vb.letters and len(vb.letters) > 1:
        ctx.st.heads.update(int(x) for x in vb.arr.reshape(-1))
    return _to_info((vb.letters, vb.arr), out.dim())


# ---------------------------------------------------------------------------------------------------- the table
METADATA = METADATA_OPS | {
    "item", "tolist", "bool", "is_nonzero", "__len__", "len", "equal", "numpy", "cpu", "any", "all",
}  # fmt: skip

RULES: dict[str, Callable[[Ctx, Call], Any]] = {}
RULES.update(dict.fromkeys(_UNARY, _rule_unary))
RULES.update(dict.fromkeys(_BINARY, _rule_binary))
RULES.update(dict.fromkeys(_PASS_SPATIAL, _rule_spatial))
RULES.update(dict.fromkeys(("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as",
                            "reshape_as", "ravel", "squeeze_", "unsqueeze_"), _rule_reshape))  # fmt: skip
RULES.update(dict.fromkeys(("expand", "expand_as", "broadcast_to"), _rule_expand))
RULES.update(dict.fromkeys(("permute", "transpose", "transpose_", "swapaxes", "swapdims", "t", "attr.T", "attr.mT",
                            "movedim"), _rule_permute))  # fmt: skip
RULES.update(dict.fromkeys(("split", "chunk", "unbind", "tensor_split", "split_with_sizes"), _rule_split))
RULES.update(dict.fromkeys(("cat", "concat", "concatenate", "stack"), _rule_cat))
RULES.update(dict.fromkeys(("mean", "sum", "amax", "amin", "std", "var", "max", "min", "logsumexp", "prod", "norm",
                            "nansum", "nanmean", "median"), _rule_reduce))  # fmt: skip
RULES.update(dict.fromkeys(("softmax", "log_softmax", "_softmax"), _rule_softmax))
RULES.update(dict.fromkeys(("matmul", "rmatmul", "mm", "bmm"), _rule_matmul))
RULES.update(dict.fromkeys(("addmm", "baddbmm"), _rule_addmm))
RULES.update(dict.fromkeys(("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                            "conv_transpose3d"), _rule_conv))  # fmt: skip
RULES.update(
    {
        "getitem": _rule_getitem,
        "linear": _rule_linear,
        "embedding": _rule_embedding,
        "batch_norm": _rule_batch_norm,
        "instance_norm": _rule_batch_norm,
        "group_norm": _rule_group_norm,
        "layer_norm": _rule_layer_norm,
        "rms_norm": _rule_layer_norm,
        "normalize": _rule_normalize,
        "scaled_dot_product_attention": _rule_sdpa,
        "multi_head_attention_forward": _rule_mha,
        "prelu": _prelu,
        "roll": _rule_axis_op(lambda c, nd: _dims_arg(c, nd, 2, "dims")),
        "flip": _rule_axis_op(lambda c, nd: _dims_arg(c, nd, 1, "dims")),
        "cumsum": _rule_axis_op(lambda c, nd: _dims_arg(c, nd, 1, "dim")),
        "pad": _rule_axis_op(_pad_axes),
    }
)


def register_function_rule(name: str, rule: str | Callable[[Ctx, Call], Any]) -> None:
    """Teaches the dependency analysis a torch function or tensor method by name (the extension point for ops the
    analysis does not know; an unknown op pins the channels it reads, so a rule only ever frees more channels).

    Args:
        name: the op's name as captured (``"linear"``, ``"view"``, ``"erfc"``).
        rule: ``"elementwise"`` for an op that works entry by entry on broadcast operands (channels pass through
            and meet), or ``rule(ctx, call) -> labels of the output`` (an ``Info``, None, or a list for tuple
            outputs; see the built-in rules in this file).

    Example:
        >>> register_function_rule("erfc", "elementwise")
    """
    if rule == "elementwise":
        rule = _rule_binary
    elif not callable(rule):
        raise ConfigError(f"rule must be 'elementwise' or a function rule(ctx, call), got {rule!r}")
    RULES[name] = rule


def apply_rule(ctx: Ctx, call: Call) -> Any:
    """The output labels of ``call`` (unknown ops pin what they read)."""
    if call.name in METADATA:
        return None
    rule = RULES.get(call.name)
    if rule is None:
        read = flatten_tensors([call.args, call.kwargs])
        if not flatten_tensors(call.output) or all(ctx.value(t) is None for t in read):
            return None
        pin_call(ctx, call, f"{_where(call)} is not followed by the analysis")
        return None
    return rule(ctx, call)


