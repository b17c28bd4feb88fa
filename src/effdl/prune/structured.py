"""Structured pruning: rank channels (filters, neurons, heads) with a criterion and physically remove the lowest, so
the smaller model is faster with ordinary dense kernels."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from effdl.core.config import Config, check_choice, check_range
from effdl.core.errors import ConfigError, UnsupportedError
from effdl.core.modules import eval_mode
from effdl.measure.activations import calibration_batches, collect_input_stats
from effdl.prune.criteria import CRITERIA
from effdl.prune.graph import Channel, DependencyGraph, Group, build_dependency_graph
from effdl.prune.surgery import PruningPlan, make_plan

__all__ = [
    "L1FilterPruneConfig",
    "StructuredPruneConfig",
    "compute_scores",
    "plan_structured",
    "select_channels",
    "structured_selection",
]

log = logging.getLogger(__name__)

_RATIO_HINT = "use ratio=0.5 to remove half of the channels"


@dataclasses.dataclass(frozen=True, kw_only=True)
class StructuredPruneConfig(Config):
    """Remove a fraction of the channels of every prunable group, ranked by an importance criterion.

    Attributes:
        criterion: name in :data:`~effdl.prune.CRITERIA`: ``l1`` (Li et al. 2017), ``l2``, ``bn_scale`` (network
            slimming), ``taylor`` (Molchanov et al. 2019; needs ``data``), ``wanda_sp`` (weights times their inputs'
            norms; needs ``data``), ``random``.
        ratio: fraction of channels removed, in [0, 1).
        per_layer: ``{module name or regex: ratio}`` overriding ``ratio`` for the groups those modules produce
            (0 keeps a group whole).
        scope: ``"layer"`` removes ``ratio`` of every group; ``"global"`` ranks channels across groups (scores
            normalized by each group's mean), ``ratio`` then being the overall fraction.
        max_ratio: under global ranking, the most any one group may lose.
        round_to: keep a multiple of this many channels per group (hardware-friendly widths).
        prune_heads: also remove whole attention heads.
        ignore: module names or regexes to keep whole (e.g. a layer the analysis cannot handle).
        num_batches: batches of ``data`` used by gradient-based criteria.
        seed: for the ``random`` criterion.

    Example:
        >>> StructuredPruneConfig(ratio=1.5)
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: ratio must be in [0.0, 1.0), got ratio=1.5; use ratio=0.5 to remove half ...
    """

    criterion: str = "l1"
    ratio: float = 0.5
    per_layer: dict[str, float] = dataclasses.field(default_factory=dict)
    config_version = 2  # version 1 had global_ranking: bool instead of scope
    scope: str = "layer"
    max_ratio: float = 0.9
    round_to: int = 1
    prune_heads: bool = True
    ignore: tuple[str, ...] = ()
    num_batches: int = 4
    seed: int = 0

    def validate(self) -> None:
        check_range("ratio", self.ratio, 0.0, 1.0, high_open=True, hint=_RATIO_HINT)
        for name, r in self.per_layer.items():
            check_range(f"per_layer[{name!r}]", r, 0.0, 1.0, high_open=True, hint=_RATIO_HINT)
        check_range("max_ratio", self.max_ratio, 0.0, 1.0, low_open=True, high_open=True)
        if not isinstance(self.round_to, int) or self.round_to < 1:
            raise ConfigError(f"round_to must be a positive integer, got round_to={self.round_to!r}; use 8 or 1")
        if self.num_batches < 1:
            raise ConfigError(f"num_batches must be >= 1, got {self.num_batches}")
        check_choice("scope", self.scope, ("layer", "global"))
        if self.criterion not in CRITERIA:
            CRITERIA.get(self.criterion, allow_callable=False)  # raises with the valid names

    def describe(self) -> str:
        if self.per_layer and self.ratio == 0:
            return f"prune structured {self.criterion} per layer ({len(self.per_layer)} groups)"
        return f"prune structured {self.criterion} {self.ratio:.0%}" + (" global" if self.scope == "global" else "")

    @classmethod
    def upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        data = dict(data)
        if "global_ranking" in data:
            data["scope"] = "global" if data.pop("global_ranking") else "layer"
        return data


@dataclasses.dataclass(frozen=True, kw_only=True)
class L1FilterPruneConfig(StructuredPruneConfig):
    """:class:`StructuredPruneConfig` with the L1-norm criterion of Li et al., "Pruning Filters for Efficient ConvNets"
    (ICLR 2017).

    Example:
        >>> L1FilterPruneConfig(ratio=0.25).criterion
        'l1'
    """

    criterion: str = "l1"


def compute_scores(
    model: nn.Module,
    graph: DependencyGraph,
    config: StructuredPruneConfig,
    *,
    data: Iterable | None = None,
    loss_fn: Callable | None = None,
) -> dict[str, torch.Tensor]:
    """One score per channel of every group, with the configured criterion.

    Gradient-based criteria average their scores over ``config.num_batches`` batches of ``data`` (``(inputs,
    targets)`` pairs), using ``loss_fn`` (default cross-entropy).
    """
    entry = CRITERIA.entry(config.criterion)
    fn = entry.obj
    generator = torch.Generator().manual_seed(config.seed)
    if entry.meta.get("needs_inputs"):
        return _input_aware_scores(model, graph, config, fn, generator, data)
    if not entry.meta.get("needs_grad"):
        tensors = _tensors(model)
        return {g.name: fn(g, tensors, None, generator) for g in graph.groups}
    if data is None:
        raise ConfigError(
            f"criterion {config.criterion!r} needs data to compute gradients; pass data= (batches of (inputs, "
            "targets)) or CLI --data, or use criterion='l1'"
        )
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    totals: dict[str, torch.Tensor] = {}
    n = 0
    with eval_mode(model):  # BN statistics stay as they are; gradients are still exact for the eval-mode network
        for batch in itertools.islice(iter(data), config.num_batches):
            model.zero_grad(set_to_none=True)
            inputs = batch[0] if isinstance(batch[0], tuple | list) else (batch[0],)  # several inputs: a tuple
            loss_fn(model(*inputs), batch[1]).backward()
            tensors = _tensors(model)
            grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
            for g in graph.groups:
                s = fn(g, tensors, grads, generator)
                totals[g.name] = totals.get(g.name, 0) + s
            n += 1
    model.zero_grad(set_to_none=True)
    if n == 0:
        raise ConfigError("data yielded no batches; pass a non-empty loader")
    return {k: v / n for k, v in totals.items()}


def _input_aware_scores(model, graph, config, fn, generator, data) -> dict[str, torch.Tensor]:
    """Scores from the input-feature norms of every Linear layer that consumes a group's channels."""
    if data is None:
        raise ConfigError(
            f"criterion {config.criterion!r} weighs weights by their inputs' norms on calibration data; pass data= "
            "(batches of (inputs, targets)) or CLI --data, or use criterion='l1'"
        )
    modules = dict(model.named_modules())
    layers = {
        s.module: modules[s.module]
        for g in graph.groups
        for s in g.sites()
        if s.role == "in" and s.tensor == "weight" and isinstance(modules.get(s.module), nn.Linear)
    }
    stats = collect_input_stats(model, layers, list(calibration_batches(data, config.num_batches)))
    norms = {name: st.feature_norm() for name, st in stats.items() if st.sq_sum is not None}
    tensors = _tensors(model)
    return {g.name: fn(g, tensors, norms, generator) for g in graph.groups}


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.state_dict(keep_vars=True))


def _ratio_for(group: Group, config: StructuredPruneConfig) -> float | None:
    """The group's own ratio from ``per_layer`` (last match wins), or None for the default."""
    return next((r for p, r in reversed(config.per_layer.items()) if group.matches(p)), None)


def _keep_count(n: int, remove: int, step: int) -> int:
    keep = n - remove
    if step > 1:
        keep = min(n, max(step, round(keep / step) * step))
    return max(1, keep)


def select_channels(
    graph: DependencyGraph, scores: Mapping[str, torch.Tensor], config: StructuredPruneConfig
) -> dict[str, tuple[Group, list[Channel]]]:
    """Picks the channels to remove: ``{group name: (group, channels)}`` (lowest scores first, ties by position)."""
    _check_patterns(graph, config)
    groups = [g for g in graph.groups if config.prune_heads or g.kind != "heads"]
    counts: dict[str, int] = {}
    ranked: list[Group] = []
    for g in groups:
        own = _ratio_for(g, config)
        if own is not None or config.scope == "layer":
            r = config.ratio if own is None else own
            step = 1 if g.kind == "heads" else config.round_to
            counts[g.name] = len(g) - _keep_count(len(g), math.floor(len(g) * r + 1e-9), step)
        else:
            ranked.append(g)
    if ranked:
        counts.update(_global_counts(ranked, scores, config))
    out = {}
    for g in groups:
        k = counts.get(g.name, 0)
        if k <= 0:
            continue
        order = torch.argsort(scores[g.name], stable=True)[:k].tolist()
        out[g.name] = (g, [g.channels[i] for i in sorted(order)])
    return out


def _global_counts(groups: list[Group], scores: Mapping[str, torch.Tensor], config: StructuredPruneConfig) -> dict:
    entries = []
    for g in groups:
        s = scores[g.name].double()
        mean = float(s.mean())
        s = s / mean if mean > 0 else s  # groups differ in scale (fan-in, producer count); compare relative scores
        entries.extend((float(v), g.name, i) for i, v in enumerate(s))
    total = math.floor(sum(len(g) for g in groups) * config.ratio + 1e-9)
    cap = {g.name: min(len(g) - 1, math.floor(len(g) * config.max_ratio)) for g in groups}
    counts = dict.fromkeys(cap, 0)
    for _, name, _ in sorted(entries):
        if total <= 0:
            break
        if counts[name] < cap[name]:
            counts[name] += 1
            total -= 1
    sizes = {g.name: (len(g), 1 if g.kind == "heads" else config.round_to) for g in groups}
    return {name: n - _keep_count(n, counts[name], step) for name, (n, step) in sizes.items()}


def _check_patterns(graph: DependencyGraph, config: StructuredPruneConfig) -> None:
    for pattern, r in config.per_layer.items():
        if any(g.matches(pattern) for g in graph.groups):
            continue
        pinned = [name for name in graph.pinned if name == pattern]
        if pinned and r > 0:
            raise UnsupportedError(
                f"layer {pattern!r} cannot be pruned: {graph.pinned[pattern]}; remove it from per_layer (or set its "
                "ratio to 0)"
            )
        if not pinned:
            names = ", ".join(g.name for g in graph.groups) or "(none)"
            raise ConfigError(f"per_layer pattern {pattern!r} matches no prunable layer; prunable groups: {names}")


def structured_selection(
    model: nn.Module,
    config: StructuredPruneConfig,
    example_inputs: Any,
    *,
    data: Iterable | None = None,
    loss_fn: Callable | None = None,
    graph: DependencyGraph | None = None,
) -> tuple[DependencyGraph, dict[str, tuple[Group, list[Channel]]]]:
    """Analyses ``model`` and picks the channels to remove, without changing it: ``(graph, selection)`` with the
    selection as :func:`select_channels` gives it (a transform that must name a culprit group keeps it)."""
    graph = graph or build_dependency_graph(model, example_inputs, ignore=config.ignore)
    scores = compute_scores(model, graph, config, data=data, loss_fn=loss_fn)
    return graph, select_channels(graph, scores, config)


def plan_structured(
    model: nn.Module,
    config: StructuredPruneConfig,
    example_inputs: Any,
    *,
    data: Iterable | None = None,
    loss_fn: Callable | None = None,
    graph: DependencyGraph | None = None,
) -> tuple[DependencyGraph, PruningPlan]:
    """Analyses ``model`` and decides what to remove, without changing it: ``(graph, plan)``."""
    graph, selection = structured_selection(model, config, example_inputs, data=data, loss_fn=loss_fn, graph=graph)
    return graph, make_plan(selection, graph.bindings)
