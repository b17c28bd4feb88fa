"""Two small helpers every transform needs: swapping a submodule by its dotted name, and running a model in eval
mode with its previous mode restored afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from effdl.core.errors import ConfigError

__all__ = ["eval_mode", "swap_module_"]


def swap_module_(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Replaces the submodule called ``name`` (dotted, as in ``named_modules``) by ``new``; returns the old one.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))
        >>> type(swap_module_(m, "1.0", nn.Tanh())).__name__, type(m[1][0]).__name__
        ('ReLU', 'Tanh')
    """
    if not name:
        raise ConfigError("swap_module_ replaces a submodule; the model itself (name '') cannot be swapped")
    parent, _, child = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    old = getattr(owner, child)
    setattr(owner, child, new)
    return old


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Puts ``model`` in eval mode for the ``with`` block and restores each module's own mode afterwards (also on
    an exception).

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> m[0].eval()  # a mixed state is restored as it was
        Linear(in_features=2, out_features=2, bias=True)
        >>> with eval_mode(m):
        ...     m.training
        False
        >>> m.training, m[0].training
        (True, False)
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
