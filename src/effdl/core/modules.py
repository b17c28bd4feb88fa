"""Small helpers every transform needs: swapping a submodule by its dotted name, running a model in eval mode with
its previous mode restored afterwards, finding tied parameters, and keeping torch's fused transformer kernels from
reading swapped layers' weights directly."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from effdl.core.errors import ConfigError

__all__ = ["eval_mode", "shared_parameters", "swap_module_", "use_unfused_transformer_layers_"]


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


def shared_parameters(model: nn.Module) -> dict[str, list[str]]:
    """Module name -> the other modules holding one of its parameters (tied weights, e.g. an embedding and the
    language-model head), for modules that share any.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
        >>> m[1].weight = m[0].weight
        >>> shared_parameters(m)
        {'0': ['1'], '1': ['0']}
    """
    holders: dict[int, list[str]] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        for p in mod._parameters.values():
            if p is not None and name not in holders.setdefault(id(p), []):
                holders[id(p)].append(name)
    out: dict[str, list[str]] = {}
    for names in holders.values():
        for n in names:
            others = [o for o in names if o != n]
            if others:
                out.setdefault(n, [])
                out[n].extend(o for o in others if o not in out[n])
    return out


def use_unfused_transformer_layers_(model: nn.Module) -> int:
    """``nn.TransformerEncoderLayer`` has a fused inference kernel that reads ``linear1.weight`` and the attention's
    projections directly, bypassing whatever replaced them (a quantized or low-rank layer). Turns it off for the
    layers of ``model`` whose children were swapped (the flag only gates the fused kernel; the activation used is
    still ``self.activation``). Returns how many layers were changed.

    Example:
        >>> layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
        >>> layer.linear1 = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 16))
        >>> use_unfused_transformer_layers_(layer)
        1
    """
    plain = (nn.Linear, nn.LayerNorm, nn.Dropout, nn.Identity, nn.MultiheadAttention,
             nn.modules.linear.NonDynamicallyQuantizableLinear)  # fmt: skip
    changed = 0
    for m in model.modules():
        if isinstance(m, nn.TransformerEncoderLayer) and m.activation_relu_or_gelu:
            if any(type(c) not in plain for c in m.modules() if c is not m):
                m.activation_relu_or_gelu = 0
                changed += 1
    return changed
