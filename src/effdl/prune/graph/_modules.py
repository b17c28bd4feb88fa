"""Module rules: how each layer type creates, passes on or pins channel labels, and how it is fixed up after its
tensors are resized. Extend with :func:`register_module_handler`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from effdl.prune.graph._functions import _keep_if_same
from effdl.prune.graph._model import Site
from effdl.prune.graph._state import _Info, _State

log = logging.getLogger(__name__)


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



def module_fixup(module: nn.Module) -> Callable[[nn.Module, nn.Module], None] | None:
    """The attribute fix-up for a module type after its tensors were resized (None if it needs none)."""
    handler = _handler_for(module)
    return None if handler is None else handler.fixup
