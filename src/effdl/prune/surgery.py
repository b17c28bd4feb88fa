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
from effdl.measure.capture import flatten_tensors
from effdl.prune.graph import Channel, Group, SizeBinding, module_fixup

__all__ = [
    "PruningPlan",
    "make_plan",
    "output_mismatch",
    "remove_channels_",
    "resize_to_state_dict_",
    "zero_channels_",
]

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
    attributes: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)

    @property
    def num_removed(self) -> int:
        """Channels removed over all groups."""
        return sum(before - after for before, after in self.widths.values())


def make_plan(
    selection: Mapping[str, tuple[Group, Sequence[Channel]]], bindings: Sequence[SizeBinding] = ()
) -> PruningPlan:
    """Turns ``{group name: (group, channels to remove)}`` into a :class:`PruningPlan`; ``bindings`` (from the
    graph) give the new values of module attributes that hard-code a channel axis's size."""
    removed: dict[tuple[str, str, int], set[int]] = {}
    widths = {}
    gone: set[int] = set()
    for name, (group, channels) in selection.items():
        widths[name] = (len(group), len(group) - len(channels))
        for ch in channels:
            gone.add(ch.id)
            for site, idx in ch.occurrences.items():
                removed.setdefault((site.module, site.tensor, site.dim), set()).update(idx)
    attributes: dict[tuple[str, str], int] = {}
    for b in bindings:
        new = sum(1 for cs in b.channels if not all(c in gone for c in cs))
        attributes.setdefault((b.module, b.attr), new)  # unchanged ones too: they are sizes, not to be guessed
    return PruningPlan({k: sorted(v) for k, v in removed.items()}, widths, attributes)


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
    owners = _owners(model)
    try:
        resized: dict[str, dict[int, tuple[int, int]]] = {}
        with torch.no_grad():
            for (module, tensor, dim), idx in plan.removed.items():
                mod, t = _tensor(model, module, tensor)
                keep = torch.ones(t.shape[dim], dtype=torch.bool)
                keep[torch.tensor(idx, dtype=torch.long)] = False
                new = t.detach().index_select(dim, keep.nonzero().flatten()).clone()
                for owner in _replace(owners, t, new, (mod, tensor)):  # every alias of a tied tensor
                    resized.setdefault(_name_of(model, owner), {})[dim] = (t.shape[dim], new.shape[dim])
        _fix_attributes(model, old_modules, resized, plan.attributes)
        if example_inputs is not None:
            with eval_mode(model), torch.no_grad():
                _call(model, example_inputs)
    except Exception as exc:
        model.__dict__.update(backup.__dict__)  # restore: nothing is lost
        raise UnsupportedError(
            f"the pruned {type(model).__name__} does not run ({type(exc).__name__}: {exc}); the model was restored. "
            "A layer probably hard-codes a channel count (e.g. x.view(n, 512)); compute it from the input instead, "
            "or keep that layer whole with ignore=[...]"
        ) from exc


def output_mismatch(model: nn.Module, reference: nn.Module, example_inputs: Any, *, tol: float = 1e-4) -> str | None:
    """None if ``model`` and ``reference`` give the same outputs on the inputs (every floating-point tensor of the
    output within ``tol`` of the reference's largest magnitude), else what differs.

    Example:
        >>> m = nn.Linear(2, 2)
        >>> output_mismatch(m, m, torch.zeros(1, 2)) is None
        True
    """

    with eval_mode(model), eval_mode(reference), torch.no_grad():
        got, want = flatten_tensors(_call(model, example_inputs)), flatten_tensors(_call(reference, example_inputs))
    if len(got) != len(want):
        return f"{len(got)} output tensors instead of {len(want)}"
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if a.shape != b.shape:
            return f"output {i} has shape {tuple(a.shape)} instead of {tuple(b.shape)}"
        if not b.is_floating_point():
            if not torch.equal(a, b):
                return f"output {i} differs"
            continue
        scale = float(b.abs().max()) if b.numel() else 0.0
        err = float((a.float() - b.float()).abs().max()) if b.numel() else 0.0
        if not err <= tol * max(scale, 1e-6):
            return f"output {i} differs by {err:.3g} at scale {scale:.3g}"
    return None


def _call(model: nn.Module, example_inputs: Any) -> Any:
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    return model(*args)


def _replace(
    owners: dict[int, list[tuple[nn.Module, str]]], old: torch.Tensor, value: torch.Tensor, where: tuple[nn.Module, str]
) -> list[nn.Module]:
    """Puts one new tensor in place of ``old`` in every module that holds it (tied weights stay tied)."""
    holders = owners.pop(id(old), [where])
    new = nn.Parameter(value, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else value
    for mod, attr in holders:
        (mod._parameters if isinstance(old, nn.Parameter) else mod._buffers)[attr] = new
    owners[id(new)] = holders
    return [mod for mod, _ in holders]


def _owners(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """id(tensor) -> every (module, attribute) holding it (tied weights have several)."""
    out: dict[int, list[tuple[nn.Module, str]]] = {}
    for mod in model.modules():
        for attr, t in [*mod._parameters.items(), *mod._buffers.items()]:
            if t is not None:
                out.setdefault(id(t), []).append((mod, attr))
    return out


def _name_of(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules(remove_duplicate=False):
        if m is module:
            return name
    return ""


def _fix_attributes(
    model: nn.Module,
    old_modules: dict[str, nn.Module],
    resized: Mapping[str, Mapping[int, tuple[int, int]]],
    attributes: Mapping[tuple[str, str], int] | None = None,
) -> None:
    """Updates module attributes after tensors were resized: the layer type's own fix-up (``in_features``,
    ``num_features``, ...); for a layer type without one, its ``int`` attributes equal to a resized dimension's old
    size; then the attributes the forward uses as sizes (``attributes``, from the analysis' bindings)."""
    for name, mod in model.named_modules():
        if name not in resized or name not in old_modules:
            continue
        fix = module_fixup(mod)
        if fix is not None:
            fix(old_modules[name], mod)
            continue
        sizes = {old: new for old, new in resized[name].values() if old != new}
        for attr, value in list(vars(mod).items()):
            if type(value) is int and value in sizes and (name, attr) not in (attributes or {}):
                setattr(mod, attr, sizes[value])
    for (name, attr), value in (attributes or {}).items():
        mod = model.get_submodule(name)
        if type(getattr(mod, attr, None)) is int:
            setattr(mod, attr, value)


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
    owners = _owners(model)
    for key in changed:
        module, _, tensor = key.rpartition(".")
        mod, t = _tensor(model, module, tensor)
        if t.dim() != state_dict[key].dim():
            raise CheckpointError(
                f"{key} has {state_dict[key].dim()} dimensions in the checkpoint and {t.dim()} in the model; "
                "it was saved from another architecture"
            )
        if tuple(t.shape) != tuple(state_dict[key].shape):  # an alias of a tied tensor may be resized already
            _replace(owners, t, torch.empty(state_dict[key].shape, dtype=t.dtype), (mod, tensor))
    resized: dict[str, dict[int, tuple[int, int]]] = {}
    for key in changed:
        old, new = own[key].shape, state_dict[key].shape
        for d, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                resized.setdefault(key.rpartition(".")[0], {})[d] = (a, b)
    _fix_attributes(model, dict(backup.named_modules()), resized)
    log.debug("resized %d tensors to the checkpoint's shapes", len(changed))
    return changed
