"""Surgery: physically removing channels (and zeroing them, for checks), and resizing a fresh model to the shapes
of a pruned checkpoint."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from effdl.core.errors import CheckpointError, UnsupportedError
from effdl.core.modules import eval_mode
from effdl.prune.graph import Channel, Group, module_fixup

__all__ = ["PruningPlan", "make_plan", "remove_channels_", "resize_to_state_dict_", "zero_channels_"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PruningPlan:
    """Which indices leave which tensor axis: ``removed[(module, tensor, dim)] = sorted indices``, plus the channel
    counts of each group before and after.

    Example:
        >>> PruningPlan(removed={("fc", "weight", 0): [1]}, widths={"fc": (4, 3)}).num_removed
        1
    """

    removed: dict[tuple[str, str, int], list[int]]
    widths: dict[str, tuple[int, int]]

    @property
    def num_removed(self) -> int:
        """Channels removed over all groups."""
        return sum(before - after for before, after in self.widths.values())


def make_plan(selection: Mapping[str, tuple[Group, Sequence[Channel]]]) -> PruningPlan:
    """Turns ``{group name: (group, channels to remove)}`` into a :class:`PruningPlan`."""
    removed: dict[tuple[str, str, int], set[int]] = {}
    widths = {}
    for name, (group, channels) in selection.items():
        widths[name] = (len(group), len(group) - len(channels))
        for ch in channels:
            for site, idx in ch.occurrences.items():
                removed.setdefault((site.module, site.tensor, site.dim), set()).update(idx)
    return PruningPlan({k: sorted(v) for k, v in removed.items()}, widths)


def _tensor(model: nn.Module, module: str, tensor: str) -> tuple[nn.Module, torch.Tensor]:
    mod = model.get_submodule(module)
    t = getattr(mod, tensor, None)
    if not isinstance(t, torch.Tensor):
        raise UnsupportedError(f"{module or 'the model'} has no tensor {tensor!r} to prune")
    return mod, t


def zero_channels_(model: nn.Module, plan: PruningPlan) -> None:
    """Sets the parameters the plan would remove to zero (buffers such as BN statistics are left), so the dense model
    computes what the pruned one will; used to check surgery.

    Example:
        >>> m = nn.Linear(2, 3)
        >>> zero_channels_(m, PruningPlan({("", "weight", 0): [0]}, {}))
        >>> m.weight[0].abs().sum().item()
        0.0
    """
    with torch.no_grad():
        for (module, tensor, dim), idx in plan.removed.items():
            _, t = _tensor(model, module, tensor)
            if isinstance(t, nn.Parameter):
                t.index_fill_(dim, torch.tensor(idx, dtype=torch.long), 0.0)


def _set(mod: nn.Module, tensor: str, value: torch.Tensor) -> None:
    old = getattr(mod, tensor)
    if isinstance(old, nn.Parameter):
        setattr(mod, tensor, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        mod._buffers[tensor] = value


def remove_channels_(model: nn.Module, plan: PruningPlan, example_inputs: Any = None) -> None:
    """Removes the plan's indices from every tensor and updates module attributes (``in_channels``,
    ``num_features``, ``num_heads``, ...). With ``example_inputs`` the result is run once; if that fails the model
    is restored and :class:`UnsupportedError` explains why.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> plan = PruningPlan({("0", "weight", 0): [1], ("0", "bias", 0): [1], ("2", "weight", 1): [1]}, {})
        >>> remove_channels_(m, plan, torch.zeros(1, 2))
        >>> m[0], m[2]
        (Linear(in_features=2, out_features=2, bias=True), Linear(in_features=2, out_features=1, bias=True))
    """
    backup = copy.deepcopy(model)
    old_modules = dict(backup.named_modules())
    try:
        with torch.no_grad():
            for (module, tensor, dim), idx in plan.removed.items():
                mod, t = _tensor(model, module, tensor)
                keep = torch.ones(t.shape[dim], dtype=torch.bool)
                keep[torch.tensor(idx, dtype=torch.long)] = False
                _set(mod, tensor, t.detach().index_select(dim, keep.nonzero().flatten()).clone())
        _fix_attributes(model, old_modules, {module for module, _, _ in plan.removed})
        if example_inputs is not None:
            args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
            with eval_mode(model), torch.no_grad():
                model(*args)
    except Exception as exc:
        model.__dict__.update(backup.__dict__)  # restore: nothing is lost
        raise UnsupportedError(
            f"the pruned {type(model).__name__} does not run ({type(exc).__name__}: {exc}); the model was restored. "
            "A layer probably hard-codes a channel count (e.g. x.view(n, 512)); compute it from the input instead, "
            "or keep that layer whole with ignore=[...]"
        ) from exc


def _fix_attributes(model: nn.Module, old_modules: dict[str, nn.Module], touched: set[str]) -> None:
    """Runs the attribute fix-ups of the resized modules and of their ancestors (an attention block owns the
    ``num_heads`` of its ``qkv``); untouched modules are left alone."""
    scope = set()
    for name in touched:
        parts = name.split(".") if name else []
        scope.update(".".join(parts[:i]) for i in range(len(parts) + 1))
    for name, mod in model.named_modules():
        fix = module_fixup(mod)
        if fix is not None and name in scope and name in old_modules:
            fix(old_modules[name], mod)


def resize_to_state_dict_(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Gives ``model``'s tensors the shapes in ``state_dict`` and updates module attributes to match: how a freshly
    built model takes the form of its pruned checkpoint. Returns the resized keys.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
        >>> sd = {"0.weight": torch.zeros(2, 2), "0.bias": torch.zeros(2), "1.weight": torch.zeros(1, 2),
        ...       "1.bias": torch.zeros(1)}
        >>> resize_to_state_dict_(m, sd)
        ['0.weight', '0.bias', '1.weight']
        >>> m[0].out_features, m[1].in_features
        (2, 2)
    """
    own = model.state_dict()
    changed = [k for k, v in own.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if not changed:
        return []
    backup = copy.deepcopy(model)
    for key in changed:
        module, _, tensor = key.rpartition(".")
        mod, t = _tensor(model, module, tensor)
        if t.dim() != state_dict[key].dim():
            raise CheckpointError(
                f"{key} has {state_dict[key].dim()} dimensions in the checkpoint and {t.dim()} in the model; "
                "it was saved from another architecture"
            )
        _set(mod, tensor, torch.empty(state_dict[key].shape, dtype=t.dtype))
    _fix_attributes(model, dict(backup.named_modules()), {k.rpartition(".")[0] for k in changed})
    log.debug("resized %d tensors to the checkpoint's shapes", len(changed))
    return changed
