"""Module rules: leaf modules traced whole (a registered handler, or a module kept whole with ``ignore``), and how
each layer type's attributes are fixed up after its tensors were resized."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from torch import nn

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Handler:
    trace: Callable[..., Any] | None
    fixup: Callable[[nn.Module, nn.Module], None] | None


_HANDLERS: list[tuple[Callable[[nn.Module], bool], _Handler]] = []


def register_module_handler(
    match: type | Callable[[nn.Module], bool],
    trace: Callable[..., Any] | None = None,
    *,
    fixup: Callable[[nn.Module, nn.Module], None] | None = None,
) -> None:
    """Teaches the dependency analysis a layer type (the extension point for custom layers).

    Most layers need nothing: the analysis follows the torch calls inside any module. Register a layer when

    - its attributes must change with its tensors (``fixup``), e.g. a custom ``in_features``; or
    - its forward calls something the analysis cannot follow (a custom kernel): ``trace`` then describes the whole
      module, which is recorded as one call.

    Args:
        match: a module class (subclasses match too), or a predicate on the module.
        trace: ``trace(state, name, module, inputs, output) -> Info | None``: records sites and returns the labels of
            the output (``inputs``: the labels of each tensor input, or None).
        fixup: ``fixup(old_module_copy, module)`` updates attributes after surgery resized the module's tensors.

    Example:
        >>> class Scaled(nn.Linear):
        ...     pass
        >>> register_module_handler(Scaled, fixup=lambda old, m: setattr(m, "out_features", m.weight.shape[0]))
    """
    pred = (lambda m: isinstance(m, match)) if isinstance(match, type) else match
    _HANDLERS.insert(0, (pred, _Handler(trace, fixup)))


def _handler_for(module: nn.Module) -> _Handler | None:
    for pred, handler in _HANDLERS:
        if pred(module):
            return handler
    return None


def leaf_trace(module: nn.Module) -> Callable[..., Any] | None:
    """The whole-module trace registered for ``module``'s type, if any."""
    handler = _handler_for(module)
    return None if handler is None else handler.trace


def module_fixup(module: nn.Module) -> Callable[[nn.Module, nn.Module], None] | None:
    """The attribute fix-up for a module type after its tensors were resized (None if it has none)."""
    handler = _handler_for(module)
    return None if handler is None else handler.fixup


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


def _linear_fixup(old: nn.Module, m: nn.Linear) -> None:
    m.out_features, m.in_features = m.weight.shape


def _bn_fixup(old: nn.Module, m: nn.Module) -> None:
    ref = m.weight if m.weight is not None else m.running_mean
    if ref is not None:
        m.num_features = ref.shape[0]


def _groupnorm_fixup(old: nn.Module, m: nn.GroupNorm) -> None:
    if old.num_groups == old.num_channels and m.weight is not None:  # only per-channel GroupNorm is ever resized
        m.num_channels = m.num_groups = m.weight.shape[0]


def _layernorm_fixup(old: nn.Module, m: nn.LayerNorm) -> None:
    if m.weight is not None:
        m.normalized_shape = tuple(m.weight.shape)


def _embedding_fixup(old: nn.Module, m: nn.Embedding) -> None:
    m.num_embeddings, m.embedding_dim = m.weight.shape


def _prelu_fixup(old: nn.Module, m: nn.PReLU) -> None:
    m.num_parameters = m.weight.numel()


_HANDLERS.extend(
    [
        (lambda m: isinstance(m, nn.modules.conv._ConvNd), _Handler(None, _conv_fixup)),
        (lambda m: isinstance(m, nn.Linear), _Handler(None, _linear_fixup)),
        (
            lambda m: isinstance(m, nn.modules.batchnorm._BatchNorm | nn.modules.instancenorm._InstanceNorm),
            _Handler(None, _bn_fixup),
        ),
        (lambda m: isinstance(m, nn.GroupNorm), _Handler(None, _groupnorm_fixup)),
        (lambda m: isinstance(m, nn.LayerNorm), _Handler(None, _layernorm_fixup)),
        (lambda m: isinstance(m, nn.Embedding), _Handler(None, _embedding_fixup)),
        (lambda m: isinstance(m, nn.PReLU), _Handler(None, _prelu_fixup)),
    ]
)
