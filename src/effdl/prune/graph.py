"""Dependency analysis: which channels of which tensors must be removed together.

The model is traced with ``torch.fx`` and run once on example inputs to learn every tensor's shape. Each tensor
then carries, for one *channel dimension*, a label per channel. Producers (a conv's filters, a Linear's neurons,
an attention block's heads) create fresh labels; shape-preserving ops pass them on; a residual addition unites
the labels of its operands channel by channel; a concatenation along channels concatenates them; flatten expands a
channel into its features. Every place a label is used in a parameter or buffer is recorded as a :class:`Site`.
A *channel* is one class of united labels: removing it removes every recorded index at once, which keeps the
model consistent.

Anything the analysis cannot follow exactly *pins* the labels it touches (they are never removed): model inputs
and outputs, ops that mix channels (LayerNorm over channels, softmax over channels, reshapes that split the
channel dimension, grouped convolutions), unknown functions. A leaf module with parameters that no handler
knows is an error naming it, unless it is excluded with ``ignore``; so the analysis can be conservative, but it
never yields a wrong model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from effdl.core.config import name_matches
from effdl.core.errors import UnsupportedError

__all__ = ["Channel", "DependencyGraph", "Group", "Site", "build_dependency_graph", "register_module_handler"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Site:
    """One axis of one parameter or buffer that holds channels.

    ``role`` says what the axis is: ``"out"`` a producer's filters/neurons, ``"in"`` a consumer's input columns,
    ``"norm"`` a per-channel scale/shift/statistic, ``"dw"`` a depthwise filter (it follows its input channel).
    """

    module: str
    tensor: str
    dim: int
    role: str

    @property
    def key(self) -> str:
        """``module.tensor`` as in the state_dict."""
        return f"{self.module}.{self.tensor}" if self.module else self.tensor


@dataclasses.dataclass
class Channel:
    """One removable unit: the indices it occupies in every site (a channel can span several indices of a site,
    e.g. the features a flattened channel becomes)."""

    id: int
    occurrences: dict[Site, list[int]]

    def indices(self, site: Site) -> list[int]:
        """Indices of this channel along ``site``."""
        return self.occurrences.get(site, [])


@dataclasses.dataclass
class Group:
    """Channels produced by the same set of layers (e.g. one conv's filters, or a residual stage's channels shared
    by every block that adds into it). Ratios and rankings apply per group.

    Attributes:
        name: the first producing module in graph order (``"blocks.0.attn"`` + ``".heads"`` for heads).
        producers: names of the modules whose outputs these channels are.
        kind: ``"channels"`` or ``"heads"``.
        channels: the removable units, in index order of the first producer.
        folds: producer -> the BatchNorm that directly follows it (and would be folded into it for inference).
    """

    name: str
    producers: tuple[str, ...]
    kind: str
    channels: list[Channel]
    folds: dict[str, str] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.channels)

    def sites(self) -> list[Site]:
        """Every site any channel of the group occupies, in a stable order."""
        seen: dict[Site, None] = {}
        for ch in self.channels:
            for site in ch.occurrences:
                seen.setdefault(site, None)
        return list(seen)

    def matches(self, pattern: str) -> bool:
        """Whether ``pattern`` (a module name or a regular expression) names this group or one of its producers."""
        return any(name_matches(n, pattern) for n in (self.name, *self.producers))


@dataclasses.dataclass
class DependencyGraph:
    """The result of :func:`build_dependency_graph`: prunable groups, and why the other channels are pinned.

    Attributes:
        groups: prunable groups, in graph order.
        pinned: producer module -> reason, for modules whose outputs cannot be pruned.
        modules: every module name that took part.
    """

    groups: list[Group]
    pinned: dict[str, str]
    modules: list[str]

    def group(self, name: str) -> Group:
        """The group named ``name`` (or produced by module ``name``)."""
        for g in self.groups:
            if g.name == name or name in g.producers:
                return g
        if name in self.pinned:
            raise UnsupportedError(f"{name!r} cannot be pruned: {self.pinned[name]}")
        raise UnsupportedError(
            f"no prunable group named {name!r}; prunable groups: {', '.join(g.name for g in self.groups) or '(none)'}"
        )

    def find(self, pattern: str) -> list[Group]:
        """Groups matching a module name or regular expression."""
        return [g for g in self.groups if g.matches(pattern)]


# --------------------------------------------------------------------------------------------------------------
# Tracing state


@dataclasses.dataclass
class _Info:
    """Labels of a tensor's channel dimension ``dim``."""

    dim: int
    labels: list[int]


class _State:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.parent: list[int] = []
        self.pin_reason: dict[int, str] = {}
        self.uses: dict[int, list[tuple[Site, int]]] = {}
        self.producer: dict[int, str] = {}  # label -> producing module (for messages and grouping)
        self.kind: dict[int, str] = {}
        self.order: list[int] = []  # labels in creation order

    # union-find over labels
    def new(self, n: int, *, producer: str, kind: str = "channels", pin: str | None = None) -> list[int]:
        labels = []
        for _ in range(n):
            lab = len(self.parent)
            self.parent.append(lab)
            self.producer[lab] = producer
            self.kind[lab] = kind
            self.order.append(lab)
            if pin:
                self.pin_reason[lab] = pin
            labels.append(lab)
        return labels

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def pin(self, labels: Iterable[int], reason: str) -> None:
        for lab in labels:
            self.pin_reason.setdefault(lab, reason)

    def use(self, labels: Sequence[int], site: Site, width: int = 1) -> None:
        """Records that label ``labels[i]`` occupies indices ``i*width .. i*width+width-1`` of ``site``."""
        for i, lab in enumerate(labels):
            for j in range(width):
                self.uses.setdefault(lab, []).append((site, i * width + j))


# --------------------------------------------------------------------------------------------------------------
# Module handlers


@dataclasses.dataclass(frozen=True)
class _Handler:
    trace: Callable[..., Any]
    fixup: Callable[[nn.Module, nn.Module], None] | None


_HANDLERS: list[tuple[Callable[[nn.Module], bool], _Handler]] = []


def register_module_handler(
    match: type | Callable[[nn.Module], bool],
    trace: Callable[..., Any],
    *,
    fixup: Callable[[nn.Module, nn.Module], None] | None = None,
) -> None:
    """Teaches the dependency analysis a module type (the extension point for custom layers).

    Args:
        match: a module class, or a predicate on the module.
        trace: ``trace(state, name, module, inputs, shape) -> output info``: records sites and returns labels for
            the output (see the built-in handlers in this file).
        fixup: ``fixup(old_module_copy, module)`` updates attributes (``in_channels``, ...) after surgery resized
            the module's tensors.
    """
    pred = (lambda m: isinstance(m, match)) if isinstance(match, type) else match
    _HANDLERS.insert(0, (pred, _Handler(trace, fixup)))


def _handler_for(module: nn.Module) -> _Handler | None:
    for pred, handler in _HANDLERS:
        if pred(module):
            return handler
    return None


def _site(name: str, tensor: str, dim: int, role: str) -> Site:
    return Site(name, tensor, dim, role)


def _conv_trace(st: _State, name: str, m: nn.Module, inputs: list, shape) -> Any:
    x = inputs[0]
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    in_dim, out_dim = (0, 1) if transposed else (1, 0)
    depthwise = not transposed and m.groups == m.in_channels and m.groups > 1
    if depthwise:
        mult = m.out_channels // m.in_channels
        if x is None or x.dim != 1:
            labels = st.new(m.out_channels, producer=name, pin="depthwise conv on an input whose channels are fixed")
            return _Info(1, labels)
        st.use(x.labels, _site(name, "weight", 0, "dw"), mult)
        if m.bias is not None:
            st.use(x.labels, _site(name, "bias", 0, "dw"), mult)
        return _Info(1, [lab for lab in x.labels for _ in range(mult)])
    if m.groups > 1:
        reason = f"grouped convolution {name} (groups={m.groups}) couples channels within groups"
        if x is not None:
            st.pin(x.labels, reason)
        return _Info(1, st.new(m.out_channels, producer=name, pin=reason))
    if x is not None:
        if x.dim == 1:
            st.use(x.labels, _site(name, "weight", in_dim, "in"))
        else:
            st.pin(x.labels, f"{name} reads them along another dimension")
    labels = st.new(m.out_channels, producer=name)
    st.use(labels, _site(name, "weight", out_dim, "out"))
    if m.bias is not None:
        st.use(labels, _site(name, "bias", 0, "out"))
    return _Info(1, labels)


def _conv_fixup(old: nn.Module, m: nn.Module) -> None:
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    w = m.weight
    if not transposed and old.groups == old.in_channels and old.groups > 1:
        mult = old.out_channels // old.in_channels
        m.out_channels = w.shape[0]
        m.in_channels = m.groups = w.shape[0] // mult
    elif transposed:
        m.in_channels, m.out_channels = w.shape[0], w.shape[1] * m.groups
    else:
        m.out_channels, m.in_channels = w.shape[0], w.shape[1] * m.groups


def _linear_trace(st: _State, name: str, m: nn.Linear, inputs: list, shape) -> Any:
    x = inputs[0]
    if x is not None:
        if x.dim == len(shape) - 1:
            st.use(x.labels, _site(name, "weight", 1, "in"))
        else:
            st.pin(x.labels, f"{name} reads them along another dimension")
    labels = st.new(m.out_features, producer=name)
    st.use(labels, _site(name, "weight", 0, "out"))
    if m.bias is not None:
        st.use(labels, _site(name, "bias", 0, "out"))
    return _Info(len(shape) - 1, labels)


def _linear_fixup(old: nn.Module, m: nn.Linear) -> None:
    m.out_features, m.in_features = m.weight.shape


def _bn_trace(st: _State, name: str, m: nn.Module, inputs: list, shape) -> Any:
    """Per-channel norms (BatchNorm, InstanceNorm): affine terms and running statistics follow the channels."""
    x = inputs[0]
    if x is None:
        return None
    if x.dim != 1:
        st.pin(x.labels, f"{name} normalizes another dimension")
        return x
    for tensor in ("weight", "bias"):
        if getattr(m, tensor, None) is not None:
            st.use(x.labels, _site(name, tensor, 0, "norm"))
    for tensor in ("running_mean", "running_var"):
        if getattr(m, tensor, None) is not None:
            st.use(x.labels, _site(name, tensor, 0, "stat"))
    return x


def _bn_fixup(old: nn.Module, m: nn.Module) -> None:
    ref = m.weight if m.weight is not None else m.running_mean
    if ref is not None:
        m.num_features = ref.shape[0]


def _groupnorm_trace(st: _State, name: str, m: nn.GroupNorm, inputs: list, shape) -> Any:
    x = inputs[0]
    if x is None:
        return None
    if x.dim != 1 or m.num_groups != m.num_channels:
        st.pin(x.labels, f"{name} normalizes over groups of {m.num_channels // m.num_groups} channels")
        return x
    if not m.affine:  # no tensor would carry the new width; keep it (rare)
        st.pin(x.labels, f"{name} has no affine tensors to resize")
        return x
    if m.affine:
        st.use(x.labels, _site(name, "weight", 0, "norm"))
        st.use(x.labels, _site(name, "bias", 0, "norm"))
    return x


def _groupnorm_fixup(old: nn.Module, m: nn.GroupNorm) -> None:
    if old.num_groups == old.num_channels and m.weight is not None:  # only per-channel GroupNorm is ever resized
        m.num_channels = m.num_groups = m.weight.shape[0]


def _layernorm_trace(st: _State, name: str, m: nn.LayerNorm, inputs: list, shape) -> Any:
    x = inputs[0]
    if x is None:
        return None
    ndim = len(shape)
    if x.dim >= ndim - len(m.normalized_shape):
        # The statistics run over the channels: removing one (even a zero) changes every output.
        st.pin(x.labels, f"{name} normalizes over these channels (mean/variance would change)")
    return x


def _embedding_trace(st: _State, name: str, m: nn.Embedding, inputs: list, shape) -> Any:
    labels = st.new(m.embedding_dim, producer=name)
    st.use(labels, _site(name, "weight", 1, "out"))
    return _Info(len(shape) - 1, labels)


def _embedding_fixup(old: nn.Module, m: nn.Embedding) -> None:
    m.embedding_dim = m.weight.shape[1]


def _is_head_attention(m: nn.Module) -> bool:
    """timm-style attention: ``qkv`` Linear laid out (q|k|v, head, head_dim), ``proj`` Linear, ``num_heads`` and
    ``head_dim`` attributes that its forward reads."""
    return (
        isinstance(getattr(m, "qkv", None), nn.Linear)
        and isinstance(getattr(m, "proj", None), nn.Linear)
        and isinstance(getattr(m, "num_heads", None), int)
        and isinstance(getattr(m, "head_dim", None), int)
        and m.qkv.out_features == 3 * m.num_heads * m.head_dim
        and m.proj.in_features == m.num_heads * m.head_dim
        and len(list(m.parameters(recurse=False))) == 0
    )


def _attention_trace(st: _State, name: str, m: nn.Module, inputs: list, shape) -> Any:
    x = inputs[0]
    qkv, proj = f"{name}.qkv", f"{name}.proj"
    if x is not None:
        if x.dim == len(shape) - 1:
            st.use(x.labels, _site(qkv, "weight", 1, "in"))
        else:
            st.pin(x.labels, f"{name} reads them along another dimension")
    h, d = m.num_heads, m.head_dim
    heads = st.new(h, producer=f"{name}.heads", kind="heads")
    for i, lab in enumerate(heads):
        rows = [s * h * d + i * d + j for s in range(3) for j in range(d)]  # (q|k|v, head, head_dim) layout
        for tensor in ("weight", "bias") if m.qkv.bias is not None else ("weight",):
            site = _site(qkv, tensor, 0, "out")
            st.uses.setdefault(lab, []).extend((site, r) for r in rows)
        site = _site(proj, "weight", 1, "in")
        st.uses.setdefault(lab, []).extend((site, i * d + j) for j in range(d))
    labels = st.new(m.proj.out_features, producer=proj)
    st.use(labels, _site(proj, "weight", 0, "out"))
    if m.proj.bias is not None:
        st.use(labels, _site(proj, "bias", 0, "out"))
    return _Info(len(shape) - 1, labels)


def _attention_fixup(old: nn.Module, m: nn.Module) -> None:
    m.num_heads = m.qkv.weight.shape[0] // (3 * m.head_dim)
    _linear_fixup(old.qkv, m.qkv)
    _linear_fixup(old.proj, m.proj)


def _opaque_trace(reason: str):
    def trace(st: _State, name: str, m: nn.Module, inputs: list, shape) -> Any:
        for x in inputs:
            if isinstance(x, _Info):
                st.pin(x.labels, f"{reason} {name}")
        if shape is None:
            return None
        return _Info(len(shape) - 1, st.new(shape[-1], producer=name, pin=f"output of {reason} {name}"))

    return trace


_PASS_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.ELU,
    nn.Mish,
    nn.PReLU,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.Identity,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.Upsample,
)


def _pass_trace(st: _State, name: str, m: nn.Module, inputs: list, shape) -> Any:
    x = inputs[0] if inputs else None
    if isinstance(m, nn.PReLU) and m.num_parameters > 1 and x is not None:
        st.pin(x.labels, f"{name} has one slope per channel")  # rare; kept simple
    out = _keep_if_same(x, shape)
    if out is None and x is not None:
        st.pin(x.labels, f"{name} changes the channel axis")
    return out


_HANDLERS.extend(
    [
        (lambda m: isinstance(m, nn.modules.conv._ConvNd), _Handler(_conv_trace, _conv_fixup)),
        (lambda m: isinstance(m, nn.Linear), _Handler(_linear_trace, _linear_fixup)),
        (
            lambda m: isinstance(m, nn.modules.batchnorm._BatchNorm | nn.modules.instancenorm._InstanceNorm),
            _Handler(_bn_trace, _bn_fixup),
        ),
        (lambda m: isinstance(m, nn.GroupNorm), _Handler(_groupnorm_trace, _groupnorm_fixup)),
        (lambda m: isinstance(m, nn.LayerNorm), _Handler(_layernorm_trace, None)),
        (lambda m: isinstance(m, nn.Embedding), _Handler(_embedding_trace, _embedding_fixup)),
        (_is_head_attention, _Handler(_attention_trace, _attention_fixup)),
        (
            lambda m: isinstance(m, nn.MultiheadAttention),
            _Handler(_opaque_trace("nn.MultiheadAttention (its heads share the embedding width)"), None),
        ),
        (lambda m: isinstance(m, _PASS_MODULES), _Handler(_pass_trace, None)),
    ]
)


# --------------------------------------------------------------------------------------------------------------
# Function and method rules


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


# --------------------------------------------------------------------------------------------------------------
# Tracing


class _Tracer(torch.fx.Tracer):
    def __init__(self, ignore: Callable[[str], bool]) -> None:
        super().__init__()
        self._ignore = ignore

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if self._ignore(qualname) or _handler_for(m) is not None:
            return True
        return super().is_leaf_module(m, qualname)


def _trace(model: nn.Module, example_inputs: tuple, ignore: Callable[[str], bool]) -> torch.fx.GraphModule:
    tracer = _Tracer(ignore)
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        raise UnsupportedError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}. Data-dependent control "
            "flow cannot be traced; move it into a submodule and pass its name in ignore=[...] (it is then kept "
            "whole), or make the branch static"
        ) from exc
    gm = torch.fx.GraphModule(tracer.root, graph)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    except Exception as exc:
        raise UnsupportedError(
            f"running the traced {type(model).__name__} on the example inputs failed: {type(exc).__name__}: {exc}; "
            "check example_inputs (shape, dtype) against what the model expects"
        ) from exc
    return gm


def build_dependency_graph(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple,
    *,
    ignore: Sequence[str] = (),
) -> DependencyGraph:
    """Traces ``model`` and groups its coupled channels.

    Args:
        model: the model to analyse (not changed).
        example_inputs: a tensor or tuple of tensors the model accepts.
        ignore: module names or regular expressions of modules to keep whole (their inputs' and outputs' channels
            are pinned); use for layers the analysis cannot handle.

    Returns:
        The :class:`DependencyGraph`.

    Raises:
        UnsupportedError: the model cannot be traced, or contains a layer with parameters that no handler knows.

    Example:
        >>> from effdl.models import create_model
        >>> g = build_dependency_graph(create_model("test_cnn1d"), torch.zeros(1, 1, 40))
        >>> [(grp.name, len(grp)) for grp in g.groups]
        [('features.0', 4), ('features.3', 4)]
    """
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    patterns = [re.compile(p) for p in ignore]

    def ignored(name: str) -> bool:
        return any(p.fullmatch(name) for p in patterns) or name in ignore

    was_training = model.training
    model.eval()
    try:
        gm = _trace(model, args, ignored)
    finally:
        model.train(was_training)
    st = _State(model)
    values: dict[torch.fx.Node, Any] = {}
    used_modules: list[str] = []
    folds: dict[str, str] = {}
    for node in gm.graph.nodes:
        src = node.args[0] if node.op == "call_module" and node.args else None
        if isinstance(src, torch.fx.Node) and src.op == "call_module" and len(src.users) == 1:
            mod, prev = st.modules[str(node.target)], st.modules[str(src.target)]
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and isinstance(
                prev, nn.modules.conv._ConvNd | nn.Linear
            ):
                folds[str(src.target)] = str(node.target)

        shape = _shape(node)
        if node.op in ("placeholder", "get_attr"):
            values[node] = None
        elif node.op == "call_module":
            name = str(node.target)
            module = st.modules[name]
            used_modules.append(name)
            inputs = [values.get(a) if isinstance(a, torch.fx.Node) else None for a in node.args]
            inputs = [v if isinstance(v, _Info) else None for v in inputs]
            if ignored(name):
                values[node] = _opaque_trace("ignored module")(st, name, module, inputs, shape)
                continue
            if isinstance(module, nn.Flatten):
                values[node] = _flatten(st, node, inputs[0], shape)
                continue
            extra = [v for v in inputs[1:] if v is not None] + _flatten_values(values, dict(node.kwargs))
            for v in extra:  # handlers follow the first input; any other tracked operand is kept whole
                st.pin(v.labels, f"extra input of {name}")
            handler = _handler_for(module)
            if handler is None:
                if any(True for _ in module.parameters()):
                    raise UnsupportedError(
                        f"layer {name!r} ({type(module).__name__}) has parameters but effdl does not know how its "
                        f"channels depend on its inputs; exclude it with ignore=[{name!r}] to keep it whole, or "
                        "teach effdl with effdl.prune.register_module_handler"
                    )
                values[node] = _opaque_trace("unknown module")(st, name, module, inputs, shape)
                continue
            values[node] = handler.trace(st, name, module, inputs, shape)
        elif node.op in ("call_function", "call_method"):
            values[node] = _function_rule(st, node, values)
        elif node.op == "output":
            for v in _flatten_values(values, node.args[0]):
                st.pin(v.labels, "they reach the model output")
    graph = _collect(st, used_modules)
    for g in graph.groups:
        g.folds = {p: folds[p] for p in g.producers if p in folds}
    return graph


def _flatten(st: _State, node: torch.fx.Node, x: _Info | None, shape) -> _Info | None:
    first = node.args[0]
    in_shape = _shape(first) if isinstance(first, torch.fx.Node) else None
    if x is None or in_shape is None or shape is None:
        return None
    out = _reshape(x, in_shape, shape)
    if out is None:
        st.pin(x.labels, f"{node.name} splits or mixes the channel axis")
    return out


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


def _collect(st: _State, used_modules: list[str]) -> DependencyGraph:
    # One tensor index can only leave with every label that uses it: unite labels sharing an index (a module
    # called twice, e.g. shared weights, records its sites once per call).
    owner: dict[tuple[str, str, int, int], int] = {}
    for lab in st.order:
        for site, idx in st.uses.get(lab, []):
            key = (site.module, site.tensor, site.dim, idx)
            if key in owner:
                st.union(owner[key], lab)
            else:
                owner[key] = lab
    classes: dict[int, list[int]] = {}
    for lab in st.order:
        classes.setdefault(st.find(lab), []).append(lab)
    pinned: dict[str, str] = {}
    by_key: dict[tuple[str, ...], list[Channel]] = {}
    kinds: dict[tuple[str, ...], str] = {}
    first_seen: dict[tuple[str, ...], int] = {}
    for root, members in classes.items():
        reasons = [st.pin_reason[m] for m in members if m in st.pin_reason]
        producers = tuple(dict.fromkeys(st.producer[m] for m in members))
        if reasons:
            for p in producers:
                pinned.setdefault(p, reasons[0])
            continue
        occ: dict[Site, list[int]] = {}
        for m in members:
            for site, idx in st.uses.get(m, []):
                occ.setdefault(site, []).append(idx)
        if not any(site.role == "out" for site in occ):
            continue
        by_key.setdefault(producers, []).append(Channel(root, occ))
        kinds[producers] = st.kind[members[0]]
        first_seen.setdefault(producers, min(members))
    groups = [
        Group(name=prods[0], producers=prods, kind=kinds[prods], channels=chs)
        for prods, chs in sorted(by_key.items(), key=lambda kv: first_seen[kv[0]])
    ]
    for g in groups:
        for p in g.producers:
            pinned.pop(p, None)
    return DependencyGraph(groups=groups, pinned=pinned, modules=list(dict.fromkeys(used_modules)))


def module_fixup(module: nn.Module) -> Callable[[nn.Module, nn.Module], None] | None:
    """The attribute fix-up for a module type after its tensors were resized (None if it needs none)."""
    handler = _handler_for(module)
    return None if handler is None else handler.fixup
