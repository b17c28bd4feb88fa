"""``prune_``: the one verb of the pruning family; the config object picks the method."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from effdl.core.errors import ConfigError
from effdl.core.report import ModelSummary, Report
from effdl.measure.profiler import profile
from effdl.models.base import check_example_inputs
from effdl.prune.structured import StructuredPruning, plan_structured
from effdl.prune.surgery import remove_channels_
from effdl.prune.unstructured import MagnitudePruning, apply_masks_, magnitude_masks, sparsity_of

__all__ = ["measure_summary", "prune_"]

log = logging.getLogger(__name__)


def measure_summary(model: nn.Module, example_inputs: Any) -> ModelSummary:
    """Parameters, non-zeros, MACs and size of ``model`` (no timing)."""
    return profile(model, example_inputs, latency=False).summary()


def prune_(
    model: nn.Module,
    config: StructuredPruning | MagnitudePruning,
    *,
    example_inputs: Any,
    data: Iterable | None = None,
    loss_fn: Callable | None = None,
) -> Report:
    """Prunes ``model`` in place as ``config`` says and reports what changed.

    - :class:`StructuredPruning` (and :class:`L1FilterPruning`) physically removes channels, neurons and heads: the
      result is a plain, smaller ``nn.Module``.
    - :class:`MagnitudePruning` zeroes individual weights; keep them at zero while fine-tuning with
      :class:`KeepSparsity`.

    Args:
        model: the model (changed in place).
        config: which method and how much.
        example_inputs: a batch the model accepts (used to trace it and to count MACs).
        data: batches of ``(inputs, targets)`` for criteria that need gradients (``taylor``).
        loss_fn: loss for those criteria (default cross-entropy).

    Returns:
        A :class:`~effdl.core.Report` with the summaries before and after and, per group, the widths.

    Example:
        >>> import torch
        >>> from effdl.models import create_model
        >>> from effdl.prune import L1FilterPruning
        >>> m = create_model("test_cnn1d")
        >>> r = prune_(m, L1FilterPruning(ratio=0.5), example_inputs=torch.zeros(1, 1, 40))
        >>> r.before.params > r.after.params, m.features[0].out_channels
        (True, 2)
    """
    args = check_example_inputs(model, example_inputs, caller="prune_")
    x = args if len(args) > 1 else args[0]
    before = measure_summary(model, x)
    if isinstance(config, StructuredPruning):
        graph, plan = plan_structured(model, config, x, data=data, loss_fn=loss_fn)
        remove_channels_(model, plan, x)
        model.effdl_structure = "pruned"  # save_model records it, so load_model can resize a fresh model
        details = {
            "method": "structured",
            "groups": [
                {"group": g.name, "kind": g.kind, "before": len(g), "after": plan.widths.get(g.name, (len(g),) * 2)[1]}
                for g in graph.groups
            ],
            "pinned": graph.pinned,
            "removed_channels": plan.num_removed,
        }
        log.info("removed %d channels in %d groups", plan.num_removed, len(plan.widths))
    elif isinstance(config, MagnitudePruning):
        masks = magnitude_masks(model, config)
        apply_masks_(model, masks)
        details = {
            "method": "magnitude",
            "sparsity": sparsity_of(masks),
            "layers": [
                {"layer": k, "weights": m.numel(), "sparsity": 1 - float(m.float().mean())} for k, m in masks.items()
            ],
        }
    else:
        raise ConfigError(
            f"prune_ does not know {type(config).__name__}; pass StructuredPruning, L1FilterPruning or MagnitudePruning"
        )
    after = measure_summary(model, x)
    return Report(command="prune", before=before, after=after, config=config.to_dict(), details=details)
