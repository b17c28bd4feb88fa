"""``prune_``: the verb of the pruning family, the transforms it dispatches to by config type, and the structure
record (tensor shapes) that lets a pruned checkpoint be loaded."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from effdl.core.errors import CheckpointError, ConfigError, UnsupportedError
from effdl.core.report import ModelSummary, Report
from effdl.core.table import format_table
from effdl.core.transform import TransformContext, apply_, register_transform
from effdl.measure.activations import InputStats, calibration_batches, layer_by_layer
from effdl.measure.profiler import profile
from effdl.models.base import check_example_inputs
from effdl.models.structure import register_structure
from effdl.prune.oneshot import OneShotPruneConfig, SparseGPTConfig, oneshot_targets, sparsegpt_prune, wanda_mask
from effdl.prune.structured import StructuredPruneConfig, structured_selection
from effdl.prune.surgery import make_plan, output_mismatch, remove_channels_, resize_to_state_dict_, zero_channels_
from effdl.prune.unstructured import (
    KeepSparsity,
    MagnitudePruneConfig,
    apply_masks_,
    magnitude_masks,
    masks_from_zeros,
    sparsity_of,
)

__all__ = ["groups_table", "measure_summary", "prune_"]

log = logging.getLogger(__name__)


def measure_summary(model: nn.Module, example_inputs: Any) -> ModelSummary:
    """Parameters, non-zeros, MACs and size of ``model`` (no timing)."""
    return profile(model, example_inputs, latency=False).summary()


def prune_(
    model: nn.Module,
    config: StructuredPruneConfig | MagnitudePruneConfig | OneShotPruneConfig,
    *,
    example_inputs: Any,
    data: Iterable | None = None,
    loss_fn: Callable | None = None,
) -> Report:
    """Prunes ``model`` in place as ``config`` says and reports what changed (the family verb of
    :func:`effdl.core.apply_`, which picks the method by the config's type).

    - :class:`StructuredPruneConfig` (and :class:`L1FilterPruneConfig`) physically removes channels, neurons and
      heads: the result is a plain, smaller ``nn.Module``.
    - :class:`MagnitudePruneConfig` zeroes individual weights; keep them at zero while fine-tuning with
      :class:`KeepSparsity`.
    - :class:`WandaConfig` and :class:`SparseGPTConfig` zero the weights of Linear layers in one shot from
      calibration ``data`` (unstructured or N:M), layer by layer.

    Args:
        model: the model (changed in place; restored as it was if pruning fails half-way).
        config: which method and how much.
        example_inputs: a batch the model accepts (used to trace it and to count MACs).
        data: batches of ``(inputs, targets)`` for criteria that need gradients (``taylor``).
        loss_fn: loss for those criteria (default cross-entropy).

    Returns:
        A :class:`~effdl.core.Report` with the summaries before and after and, per group, the widths.

    Example:
        >>> import torch
        >>> from effdl.models import create_model
        >>> from effdl.prune import L1FilterPruneConfig
        >>> m = create_model("test_cnn1d")
        >>> r = prune_(m, L1FilterPruneConfig(ratio=0.5), example_inputs=torch.zeros(1, 1, 40))
        >>> r.before.params > r.after.params, m.features[0].out_channels
        (True, 2)
    """
    if not isinstance(config, StructuredPruneConfig | MagnitudePruneConfig | OneShotPruneConfig):
        raise ConfigError(
            f"prune_ does not know {type(config).__name__}; pass StructuredPruneConfig, L1FilterPruneConfig, "
            "MagnitudePruneConfig, WandaConfig or SparseGPTConfig (or call effdl.apply_ for any registered config)"
        )
    return apply_(model, config, example_inputs=example_inputs, data=data, loss_fn=loss_fn)


def _inputs(model: nn.Module, context: TransformContext, caller: str) -> Any:
    args = check_example_inputs(model, context.example_inputs, caller=caller)
    return args if len(args) > 1 else args[0]


@register_transform(StructuredPruneConfig)
def _structured(model: nn.Module, config: StructuredPruneConfig, context: TransformContext) -> Report:
    x = _inputs(model, context, "prune_")
    before = measure_summary(model, x)
    graph, selection = structured_selection(model, config, x, data=context.data, loss_fn=context.loss_fn)
    plan = make_plan(selection, graph.bindings)
    original = copy.deepcopy(model)
    zeroed = copy.deepcopy(model)
    zero_channels_(zeroed, plan)
    remove_channels_(model, plan, x)
    err = output_mismatch(model, zeroed, x)
    if err is not None:  # never silently wrong: the pruned model must compute what the zeroed dense one does
        culprit = _culprit(original, graph, selection, x)
        raise UnsupportedError(
            f"the pruned model does not compute what the dense model with those channels zeroed does ({err}); "
            + (f"group {culprit!r} breaks it: keep it whole with per_layer={{{culprit!r}: 0}} or ignore=[...] (a "
               "module attribute or literal probably hard-codes its width)" if culprit else
               "keep the affected layers whole with ignore=[...]")
            + "; the model was restored"
        )  # fmt: skip
    details = {
        "method": "structured",
        "groups": [
            {"group": g.name, "kind": g.kind, "before": len(g), "after": plan.widths.get(g.name, (len(g),) * 2)[1]}
            for g in graph.groups
        ],
        "pinned": graph.pinned,
        "left_out": [{"layer": k, "reason": v} for k, v in graph.pinned.items() if v != "they reach the model output"],
        "attributes": {f"{m}.{a}": v for (m, a), v in plan.attributes.items()},
        "removed_channels": plan.num_removed,
    }
    log.info("removed %d channels in %d groups", plan.num_removed, len(plan.widths))
    after = measure_summary(model, x)
    return Report(command="prune", before=before, after=after, config=config.to_dict(), details=details)


def _culprit(original: nn.Module, graph, selection: dict, x: Any) -> str | None:
    """The first group whose removal alone breaks the equivalence (None if none does on its own)."""
    for name, chosen in list(selection.items())[:64]:
        plan = make_plan({name: chosen}, graph.bindings)
        trial, zeroed = copy.deepcopy(original), copy.deepcopy(original)
        zero_channels_(zeroed, plan)
        try:
            remove_channels_(trial, plan, x)
        except UnsupportedError:
            return name
        if output_mismatch(trial, zeroed, x) is not None:
            return name
    return None


def _keep_zeros(model: nn.Module, config: MagnitudePruneConfig) -> list:
    return [KeepSparsity(masks_from_zeros(model))]  # fine-tuning after magnitude pruning keeps the zeros


@register_transform(MagnitudePruneConfig, keep_during_training=_keep_zeros)
def _magnitude(model: nn.Module, config: MagnitudePruneConfig, context: TransformContext) -> Report:
    x = _inputs(model, context, "prune_")
    before = measure_summary(model, x)
    masks = magnitude_masks(model, config)
    apply_masks_(model, masks)
    details = {
        "method": "magnitude",
        "sparsity": sparsity_of(masks),
        "layers": [
            {"layer": k, "weights": m.numel(), "sparsity": 1 - float(m.float().mean())} for k, m in masks.items()
        ],
    }
    after = measure_summary(model, x)
    return Report(command="prune", before=before, after=after, config=config.to_dict(), details=details)


@register_transform(OneShotPruneConfig, keep_during_training=_keep_zeros)
def _oneshot(model: nn.Module, config: OneShotPruneConfig, context: TransformContext) -> Report:
    x = _inputs(model, context, "prune_")
    before = measure_summary(model, x)
    layers, dense = oneshot_targets(model, config.ignore)
    if context.data is None:
        raise ConfigError(
            f"{config.method} prunes from calibration data; pass data= (batches of the training split), or use "
            "MagnitudePruneConfig, which needs none"
        )
    batches = list(calibration_batches(context.data, config.calibration_batches))
    rows: dict[str, dict[str, Any]] = {}
    gram = isinstance(config, SparseGPTConfig)

    def prune_layer(name: str, layer: nn.Module, stats: InputStats) -> None:
        w = layer.weight
        with torch.no_grad():
            if gram:
                new = sparsegpt_prune(w, stats.hessian(), config.ratio, n_m=config.n_m, damp=config.damp,
                                      block_size=config.block_size)  # fmt: skip
            else:
                new = w.detach().float() * wanda_mask(w, stats.feature_norm(), config.ratio, config.n_m)
            err = None
            if stats.sample is not None:
                ref = stats.sample @ w.detach().float().T
                err = float((stats.sample @ new.T - ref).norm() / ref.norm().clamp(min=1e-12))
            w.copy_(new.to(w.dtype))
        rows[name] = {"layer": name, "weights": w.numel(), "sparsity": float((w == 0).float().mean()),
                      "output_error": err}  # fmt: skip

    layer_by_layer(model, layers, batches, prune_layer, gram=gram, max_sample=512, sequential=config.sequential)
    total = sum(r["weights"] for r in rows.values())
    details = {
        "method": config.method,
        "n_m": list(config.n_m) if config.n_m else None,
        "sparsity": sum(r["sparsity"] * r["weights"] for r in rows.values()) / max(total, 1),
        "calibration_batches": len(batches),
        "layers": [rows[n] for n in layers],
        "dense_layers": dense,
    }
    log.info("%s: %d layers at %.1f%% sparsity, %d left dense", config.describe(), len(rows),
             100 * details["sparsity"], len(dense))  # fmt: skip
    after = measure_summary(model, x)
    return Report(command="prune", before=before, after=after, config=config.to_dict(), details=details)


def _describe_shapes(model: nn.Module, reference: nn.Module | None) -> dict[str, Any] | None:
    """The tensor shapes that differ from the freshly built model's (all of them, marked ``unchecked``, when the
    model has no spec to compare with)."""
    own = model.state_dict()
    if reference is None:
        return {"shapes": {k: list(v.shape) for k, v in own.items()}, "unchecked": True,
                "attributes": _int_attributes(model)}  # fmt: skip
    ref = reference.state_dict()
    changed = {k: list(v.shape) for k, v in own.items() if k in ref and ref[k].numel() > 0 and ref[k].shape != v.shape}
    # a layer whose weight is no longer a float tensor (packed low-bit codes) still has the width pruning gave it:
    # its float weight shape, (out_features, in_features), is what a fresh model must be resized to first
    references = dict(reference.named_modules())
    for name, m in model.named_modules():
        key = f"{name}.weight" if name else "weight"
        if key in own or key not in ref or ref[key].dim() != 2 or name not in references:
            continue
        width = getattr(m, "out_features", None), getattr(m, "in_features", None)
        if all(isinstance(v, int) for v in width) and tuple(ref[key].shape) != width:
            changed[key] = list(width)
    if not changed:
        return None
    theirs = _int_attributes(reference)
    attributes = {
        name: diff
        for name, ints in _int_attributes(model).items()
        if (diff := {a: v for a, v in ints.items() if theirs.get(name, {}).get(a, v) != v})
    }
    return {"shapes": changed, **({"attributes": attributes} if attributes else {})}


def _int_attributes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Every module's plain ``int`` attributes (what a pruned model's forward may use as sizes: ``num_heads``)."""
    out = {}
    for name, m in model.named_modules():
        ints = {a: v for a, v in vars(m).items() if type(v) is int and not a.startswith("_")}
        if ints:
            out[name] = ints
    return out


def _restore_shapes(model: nn.Module, record: dict[str, Any]) -> None:
    own = model.state_dict()  # empty tensors (quantizer statistics) are sized when the weights load
    shapes = {k: tuple(v) for k, v in record["shapes"].items() if k in own and own[k].numel() > 0}
    grown = [
        f"{k}: checkpoint {s} vs model {tuple(own[k].shape)}"
        for k, s in shapes.items()
        if len(s) != own[k].dim() or any(a > b for a, b in zip(s, own[k].shape, strict=True))
    ]
    if grown:  # removing channels only ever shrinks a tensor: this checkpoint is another architecture's
        raise CheckpointError(
            f"the checkpoint's tensors do not come from pruning this model ({'; '.join(grown[:3])}); check that the "
            "model and its options match the checkpoint"
        )
    resized = resize_to_state_dict_(model, {k: torch.empty(s) for k, s in shapes.items()})
    modules = dict(model.named_modules())
    for name, ints in record.get("attributes", {}).items():
        for attr, value in ints.items():
            if name in modules and type(getattr(modules[name], attr, None)) is int and isinstance(value, int):
                setattr(modules[name], attr, value)
    if resized and record.get("unchecked"):
        log.warning(
            "resized %d tensors of the given %s to the checkpoint's (smaller) shapes, e.g. %s; the checkpoint has no "
            "model spec to confirm they come from pruning it",
            len(resized),
            type(model).__name__,
            resized[0],
        )


# after physical channel removal the tensors are smaller than the spec's: a fresh model is resized to the checkpoint
register_structure("shapes", describe=_describe_shapes, restore=_restore_shapes, order=20)


def groups_table(details: dict[str, Any]) -> str:
    """Channels per group before and after, from the ``details`` of a structured pruning report.

    Example:
        >>> print(groups_table({"groups": [{"group": "conv", "kind": "channels", "before": 8, "after": 4}]}))
        | group | kind     | before | after |
        |:------|:---------|-------:|------:|
        | conv  | channels |      8 |     4 |
    """
    groups = [g for g in details.get("groups", []) if g["before"] != g["after"]]
    rows = [[g["group"], g["kind"], g["before"], g["after"]] for g in groups]
    return format_table(rows, ["group", "kind", "before", "after"], align="llrr") if rows else "(no group changed)"
