"""What transforms did to a model's structure, written into its checkpoint and rebuilt on load.

Each method family registers a *structure kind* here (``register_structure``): a ``describe`` function that reads
the kind's record off a transformed model (low-rank layers and their ranks, fake-quant layers and their config,
tensor shapes after channel removal) and a ``restore`` function that gives a freshly built model that structure.
:func:`~effdl.models.save_model` writes the records into the checkpoint's metadata and
:func:`~effdl.models.load_model` replays them in order, so this package imports no method package and nothing is
stamped on the model."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from effdl.core.errors import CheckpointError, ConfigError

__all__ = ["StructureKind", "describe_structure", "register_structure", "restore_structure_", "structure_kinds"]


@dataclasses.dataclass(frozen=True)
class StructureKind:
    """A kind of structural change and how to record and rebuild it.

    Attributes:
        name: the record's ``kind``.
        describe: ``describe(model, reference) -> record | None``: the record of ``model`` (JSON-able), or None if
            the model has no such change. ``reference`` is the model as built from its spec with the earlier
            kinds restored (None when the model has no spec).
        restore: ``restore(model, record)``: gives a freshly built model that structure, in place.
        order: kinds are described and restored in increasing order.
    """

    name: str
    describe: Callable[[nn.Module, nn.Module | None], dict[str, Any] | None]
    restore: Callable[[nn.Module, dict[str, Any]], None]
    order: int


_KINDS: dict[str, StructureKind] = {}


def register_structure(
    name: str,
    *,
    describe: Callable[[nn.Module, nn.Module | None], dict[str, Any] | None],
    restore: Callable[[nn.Module, dict[str, Any]], None],
    order: int,
) -> None:
    """Registers a structure kind (each method family does so for what its transforms change).

    Example:
        >>> register_structure("demo-widths", describe=lambda m, ref: None, restore=lambda m, rec: None, order=99)
        >>> "demo-widths" in structure_kinds()
        True
    """
    _KINDS[name] = StructureKind(name, describe, restore, order)


def structure_kinds() -> dict[str, StructureKind]:
    """The registered kinds, in the order they are restored."""
    return {k.name: k for k in sorted(_KINDS.values(), key=lambda k: (k.order, k.name))}


def describe_structure(model: nn.Module, reference: nn.Module | None = None) -> list[dict[str, Any]]:
    """The records of every registered kind found in ``model``: ``[{"kind": name, ...}, ...]`` in restore order.
    ``reference`` (a fresh model built from the same spec) is updated in place with each record, so a kind that
    compares against it (tensor shapes) sees the structure the earlier kinds rebuild."""
    records = []
    for kind in structure_kinds().values():
        record = kind.describe(model, reference)
        if record is None:
            continue
        records.append({"kind": kind.name, **record})
        if reference is not None:
            kind.restore(reference, record)
    return records


def restore_structure_(model: nn.Module, records: list[dict[str, Any]]) -> None:
    """Replays the ``records`` written by :func:`describe_structure` on a freshly built model, in order."""
    if not isinstance(records, list):
        raise CheckpointError(f"the checkpoint's structure records must be a list, got {type(records).__name__}")
    kinds = structure_kinds()
    for record in records:
        name = record.get("kind") if isinstance(record, dict) else None
        if name not in kinds:
            raise CheckpointError(
                f"the checkpoint records a structure of kind {name!r}, which this effdl does not know (known kinds: "
                f"{', '.join(kinds) or '(none)'}); it was written by another effdl version"
            )
    order = list(kinds)
    for record in sorted(records, key=lambda r: order.index(r["kind"])):  # the registered order, whatever wrote them
        name = record["kind"]
        try:
            kinds[name].restore(model, {k: v for k, v in record.items() if k != "kind"})
        except (ConfigError, KeyError, AttributeError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"could not rebuild the {name!r} structure the checkpoint records ({type(exc).__name__}: {exc}); "
                "check that the model and its options match the checkpoint"
            ) from exc
