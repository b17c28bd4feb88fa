"""Compression to a target: search per-layer pruning ratios and per-layer precision under an accuracy tolerance,
with latency measured on this machine in the loop (NetAdapt, Yang et al., ECCV 2018, with a cached per-layer
latency table; layers left in float chosen by quantization sensitivity).

The search (:func:`compress_to_target`) walks from the trained model towards smaller ones, one step at a time:

1. every prunable group (channels shared through dependencies) proposes the fewest channels it must lose for the
   objective (predicted latency at the serving batch, size, or MACs) to fall by ``step`` of its current value, and
   one more proposal narrows every group by one width level (per-layer overheads can make only joint cuts pay), and
   one cuts every group to one common share of its channels (the uniform route, found by bisection); for
   ``latency+size`` a proposal the latency model predicts slower is dropped (narrow layers can run slower in int8
   kernels, and the two ratios' mean would otherwise buy size with latency);
2. each proposal is scored by the validation accuracy the current model loses with that cut, without retraining,
   per share of the objective it removes; the best becomes the next point;
3. the point's plan is applied to the original model (L1 ranking, the same one-shot pruning the recipe replays),
   fine-tuned briefly with distillation from the original and evaluated; it is timed whole in the runtime, and the
   latency model is refitted with it.

A point whose validation accuracy falls past twice the tolerance is fine-tuned again as long as the final recipe
will be (the short fine-tune understates what the full one recovers; ``confirm``); if it still falls past, it stays
in the explored front but is not stepped from: the step's next-best proposals are tried instead (``retries``). It
stops when those fail too, when the objective ratio asked for is reached, when every group is at ``max_ratio`` or no
cut lowers the objective enough, or when the budget (steps, seconds) is spent. The explored points, most aggressive
first, become recipes (prune per layer, fine-tune with distillation, int8 with the layers int8 hurts most kept float),
replayed by :func:`~effdl.compress.compress_model` from the original model and measured in the real runtime; the
first whose test accuracy is within the tolerance is the result (at most ``final_tries`` are replayed). The recipe
written to ``OUT/recipe.yaml`` replays the same model with ``effdl compress``.

Decisions during the search use a validation split of the training data (held out from the search's fine-tunes,
though the original model was trained on it); the tolerance is checked on the test split, as the report states.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effdl.compress.finetune import FinetuneConfig
from effdl.compress.latency_model import LatencyModel, LatencyTable
from effdl.compress.pipeline import CompressOutcome, compress_model, legacy_measure
from effdl.compress.report import pareto_front
from effdl.core.checkpoint import tensors_digest
from effdl.core.config import Config, check_choice, check_range
from effdl.core.errors import ConfigError
from effdl.core.io import atomic_write_json, atomic_write_text
from effdl.core.plot import saved_figure
from effdl.core.recipe import Recipe
from effdl.core.rundir import claim_run_dir, run_identity
from effdl.core.table import format_table, human_bytes
from effdl.core.transform import TransformContext, run_transform
from effdl.data.base import DatasetSplits
from effdl.data.loaders import split_validation
from effdl.distill.config import DistillConfig
from effdl.measure.evaluation import evaluate
from effdl.measure.macs import count_macs
from effdl.measure.summary import MeasureConfig
from effdl.prune.graph import build_dependency_graph
from effdl.prune.structured import StructuredPruneConfig, plan_structured
from effdl.prune.surgery import remove_channels_
from effdl.quant.config import Int8Config
from effdl.quant.diagnose import accuracy_controlled_config
from effdl.quant.int8 import available_runtimes

__all__ = ["OBJECTIVES", "SearchPoint", "TargetConfig", "TargetOutcome", "compress_to_target"]

log = logging.getLogger(__name__)

#: what the search minimises: predicted latency at the serving batch, size in bytes, multiply-accumulates, or
#: ``latency+size``: the geometric mean of the two ratios to the original ("as small and fast as possible")
OBJECTIVES = ("latency", "size", "macs", "latency+size")
#: the runtime the latency model measures and the recipe targets; ``auto``: int8 in onnxruntime when it is installed
#: (else pytorch float), and for the latency objective the float runtimes too when the table predicts them faster
SEARCH_RUNTIMES = ("auto", "onnxruntime-int8", "onnxruntime", "pytorch")
_STATE = "search.json"
_LATENCY_SLACK = 0.01  # latency+size: a cut may leave the predicted latency at most this much higher


@dataclasses.dataclass(frozen=True, kw_only=True)
class TargetConfig(Config):
    """What to compress towards, and the search's budget.

    Attributes:
        objective: minimise ``latency`` (at the serving batch size, on this machine), ``size`` or ``macs``.
        tolerance: accuracy points (percent) the result may lose against the original on the test set; None: no
            accuracy constraint (only with ``ratio``).
        ratio: stop at this objective ratio (original / compressed, e.g. 5 for 5x faster) and return it with the
            least accuracy loss found; None: go as far as the tolerance allows.
        runtime: the runtime the search times and the recipe targets (see :data:`SEARCH_RUNTIMES`).
        criterion: structured-pruning criterion that ranks channels within a group.
        step: the share of the objective each search step removes (NetAdapt's resource reduction schedule).
        levels: the most widths tried per group (bounds the shapes the latency table measures).
        round_to: kept widths are multiples of this (kernels of odd widths are often slower; groups narrower than
            twice this go in steps of 1).
        max_ratio: the largest share of any group's channels that may go.
        search_epochs: fine-tuning epochs of each explored point (short-term fine-tune).
        finetune_epochs: fine-tuning epochs of the final recipe.
        distill: fine-tune with distillation from the original model.
        max_steps: search steps at most.
        time_budget_s: stop searching after this many seconds (None: no limit).
        final_tries: candidates replayed in full, most aggressive first, until one meets the tolerance.
        confirm: a point that falls past twice the tolerance after the short fine-tune is fine-tuned again for
            ``finetune_epochs`` (as the final recipe will be) before it is given up.
        retries: when a step's point still falls past twice the tolerance, the next-best proposals of that step
            tried (one at a time) before the search stops; 0: stop at the first failure.
        seed: validation split and fine-tuning seed.

    Example:
        >>> TargetConfig(tolerance=-1)
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: tolerance must be in [0.0, inf), got tolerance=-1; ...
    """

    objective: str = "latency"
    tolerance: float | None = 1.0
    ratio: float | None = None
    runtime: str = "auto"
    criterion: str = "l1"
    step: float = 0.1
    levels: int = 16
    round_to: int = 4
    max_ratio: float = 0.9
    search_epochs: int = 2
    finetune_epochs: int = 10
    distill: bool = True
    max_steps: int = 40
    time_budget_s: float | None = None
    final_tries: int = 3
    confirm: bool = True
    retries: int = 2
    seed: int = 0

    def validate(self) -> None:
        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("runtime", self.runtime, SEARCH_RUNTIMES)
        if self.tolerance is None and self.ratio is None:
            raise ConfigError("give a tolerance (accuracy points the result may lose), a ratio to reach, or both")
        if self.tolerance is not None:
            check_range("tolerance", self.tolerance, 0.0, hint="use tolerance=1.0 (one accuracy point)")
        if self.ratio is not None:
            check_range("ratio", self.ratio, 1.0, low_open=True, hint="use ratio=5 for 5x (faster, smaller)")
        check_range("step", self.step, 0.0, 1.0, low_open=True, high_open=True, hint="use step=0.1")
        check_range("levels", self.levels, 2, 1024, hint="use levels=16")
        check_range("round_to", self.round_to, 1, 1024, hint="use round_to=4")
        check_range("max_ratio", self.max_ratio, 0.0, 1.0, low_open=True, high_open=True, hint="use max_ratio=0.9")
        check_range("search_epochs", self.search_epochs, 0, 1000, hint="use search_epochs=2")
        check_range("finetune_epochs", self.finetune_epochs, 0, 10_000, hint="use finetune_epochs=10")
        check_range("max_steps", self.max_steps, 1, 100_000, hint="use max_steps=40")
        check_range("final_tries", self.final_tries, 1, 100, hint="use final_tries=3")
        check_range("retries", self.retries, 0, 100, hint="use retries=2")
        if self.time_budget_s is not None:
            check_range("time_budget_s", self.time_budget_s, 0.0, low_open=True, hint="use time_budget_s=600")
        StructuredPruneConfig(criterion=self.criterion)  # an unknown criterion raises with the valid names

    def describe(self) -> str:
        goal = f"{self.ratio:g}x {self.objective}" if self.ratio else f"least {self.objective}"
        within = f" within {self.tolerance:g} points" if self.tolerance is not None else ""
        return f"target: {goal}{within}"


@dataclasses.dataclass
class SearchPoint:
    """One explored plan: channels removed per group, its short-fine-tuned validation accuracy and its predicted
    costs (latency in the search runtime, size in bytes, MACs)."""

    index: int
    plan: dict[str, int]
    accuracy: float
    latency_ms: float
    size_bytes: int
    macs: int
    chosen_group: str | None = None
    measured_ms: float | None = None
    epochs: int | None = None  # fine-tuning epochs behind ``accuracy`` (None: the search's short fine-tune)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchPoint:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["index"]), {str(k): int(v) for k, v in d["plan"].items()}, float(d["accuracy"]),
                   float(d["latency_ms"]), int(d["size_bytes"]), int(d["macs"]), d.get("chosen_group"),
                   None if d.get("measured_ms") is None else float(d["measured_ms"]),
                   None if d.get("epochs") is None else int(d["epochs"]))  # fmt: skip

    def cost(self, objective: str, bases: dict[str, float] | None = None) -> float:
        """The point's value of ``objective`` (latency: measured when it was, else predicted; ``latency+size``
        needs the original's latency and size, ``bases``)."""
        latency = self.measured_ms if self.measured_ms is not None else self.latency_ms
        if objective == "latency+size":
            bases = bases or {"latency": 1.0, "size": 1.0}
            return math.sqrt(latency / bases["latency"] * self.size_bytes / bases["size"])
        return {"latency": latency, "size": float(self.size_bytes), "macs": float(self.macs)}[objective]


@dataclasses.dataclass
class TargetOutcome:
    """The search's result: the chosen recipe, every explored point, the final compression run (replayed from the
    original model and measured in the real runtime) and the latency model's prediction against the measurement."""

    recipe: Recipe
    points: list[SearchPoint]
    chosen: SearchPoint
    outcome: CompressOutcome
    runtime: str
    float_layers: list[str]
    predicted_ms: float
    measured_ms: float | None
    stop_reason: str
    details: dict[str, Any]


def compress_to_target(
    model: nn.Module,
    data: DatasetSplits,
    target: TargetConfig,
    *,
    out_dir: str | os.PathLike,
    restart: bool = False,
    measure: MeasureConfig | None = None,
    progress: bool = True,
    latency_table: LatencyTable | None = None,
) -> TargetOutcome:
    """Searches per-layer pruning ratios and precision for ``target`` and compresses ``model`` with the result.

    Writes into ``out_dir``: ``search.json`` (every point; an interrupted search continues from it),
    ``recipe.yaml`` (the chosen plan, replayable with ``effdl compress``), ``target.md`` / ``target.json`` (the
    explored points with the Pareto front, the final figures, predicted against measured latency), ``front.png``,
    and the final compression run under ``runs/NN`` (its ``report.md`` and deployable model).

    Args:
        model: the trained model (not changed).
        data: its dataset; the search decides on a validation split (10% of ``data.train``, held out from its
            fine-tunes) and reports on ``data.test``.
        target: the objective, tolerance and budget.
        out_dir: output folder.
        restart: start over instead of continuing a search in ``out_dir``.
        measure: latency measurement; ``batch_size`` is the serving batch the latency objective is for.
        progress: progress bar over the search steps.
        latency_table: the per-layer latency table (default: this machine's cached table).

    Raises:
        ConfigError: the target cannot be met (the message gives the best point reached), or bad settings.
    """
    if not isinstance(target, TargetConfig):
        raise ConfigError(f"compress_to_target takes a TargetConfig, got {type(target).__name__}")
    measure = legacy_measure(measure, {}, "compress_to_target")
    out = Path(out_dir)
    budget = ("max_steps", "time_budget_s", "final_tries")  # a continued search may be given more of these
    settings = {k: v for k, v in target.to_dict().items() if k not in budget}
    identity = run_identity(target=settings, model=tensors_digest(model.state_dict()),
                            data=data.fingerprint(), batch_size=measure.batch_size)  # fmt: skip
    with claim_run_dir(out, command="compress-target", identity=identity, resume=not restart, restart=restart):
        search = _Search(model.eval(), data, target, out, measure, progress, latency_table)
        return search.run()


def _runtime(target: TargetConfig) -> str:
    has_ort = "onnxruntime" in available_runtimes()
    if target.runtime == "auto":
        return "onnxruntime-int8" if has_ort else "pytorch"
    return target.runtime


class _Search:
    def __init__(self, model, data, target, out, measure, progress, table) -> None:
        self.model, self.data, self.target, self.out, self.measure = model, data, target, out, measure
        self.progress = progress
        self.runtime = _runtime(target)
        self.example = data.example_inputs(measure.batch_size)
        self.table = table or LatencyTable(batch_size=measure.batch_size, threads=measure.threads)
        if self.table.batch_size != measure.batch_size:
            raise ConfigError(f"the latency table is for batch {self.table.batch_size}, the target for "
                              f"{measure.batch_size}; pass a table of the serving batch size")  # fmt: skip
        train, val = split_validation(data.train, 0.1, seed=target.seed)
        self.search_data = dataclasses.replace(data, name=f"{data.name} (search split)", train=train, test=val)
        self.val = val
        self.graph = build_dependency_graph(model, data.example_inputs(2))
        self.groups = {g.name: len(g) for g in self.graph.groups if g.kind != "heads"}
        if not self.groups:
            raise ConfigError(f"{type(model).__name__} has no prunable channel group; nothing to search over")
        self.calib = [(self.example, None)]
        self._models: dict[str, LatencyModel] = {}
        self.latency = self.latency_model(self.runtime)
        self.base_params = sum(p.numel() for p in model.parameters())

    def latency_model(self, runtime: str) -> LatencyModel:
        """The latency model of ``runtime``, fitted to the original and two uniformly pruned copies measured whole
        (the search adds every point it explores)."""
        if runtime not in self._models:
            lm = LatencyModel(self.model, self.example, runtime, self.table, data=self.calib)
            for share in (0.5, 0.75):
                plan = {g: min(math.floor(n * share), math.floor(n * self.target.max_ratio + 1e-9), n - 1)
                        for g, n in self.groups.items()}  # fmt: skip
                lm.calibrate(self.pruned(plan))
            self._models[runtime] = lm
        return self._models[runtime]

    # ---- costs of a plan -------------------------------------------------------------------------------------
    def pruned(self, plan: dict[str, int], source: nn.Module | None = None) -> nn.Module:
        """``source`` (default: the original) with the plan's channels removed (L1 ranking, no retraining)."""
        trial = copy.deepcopy(source if source is not None else self.model)
        if not any(plan.values()):
            return trial
        config = self.prune_config(plan)
        graph = self.graph if source is None else None
        _, p = plan_structured(trial, config, self.data.example_inputs(2), graph=graph)
        remove_channels_(trial, p)
        return trial.eval()

    def prune_config(self, plan: dict[str, int]) -> StructuredPruneConfig:
        per_layer = {re.escape(g): k / self.groups[g] for g, k in plan.items() if k > 0}
        return StructuredPruneConfig(criterion=self.target.criterion, ratio=0.0, per_layer=per_layer,
                                     seed=self.target.seed)  # fmt: skip

    def costs(self, pruned: nn.Module) -> tuple[float, int, int]:
        latency = self.latency.predict(pruned)
        macs = count_macs(pruned, self.data.example_inputs(1))
        params = sum(p.numel() for p in pruned.parameters())
        if self.runtime == "onnxruntime-int8":  # int8 weights of Conv/Linear layers, the rest float
            weighted = sum(m.weight.numel() for m in pruned.modules() if isinstance(m, nn.Conv1d | nn.Conv2d |
                                                                                     nn.Conv3d | nn.Linear))
            size = weighted + 4 * (params - weighted)
        else:
            size = 4 * params
        return latency, size, macs

    def cost(self, pruned: nn.Module) -> float:
        latency, size, macs = self.costs(pruned)
        return self.value(SearchPoint(-1, {}, 0.0, latency, size, macs))

    def value(self, point: SearchPoint) -> float:
        """The objective's value at ``point``."""
        return point.cost(self.target.objective, self.bases)

    def base_cost(self) -> float:
        """The original float model's objective (the denominator of every ratio)."""
        if self.target.objective == "latency+size":
            return 1.0
        if self.target.objective == "latency":
            return self.float_reference_ms
        if self.target.objective == "size":
            return 4.0 * self.base_params
        return float(count_macs(self.model, self.data.example_inputs(1)))

    # ---- accuracy --------------------------------------------------------------------------------------------
    def accuracy(self, model: nn.Module) -> float:
        return evaluate(model, self.val)["accuracy"]

    def finetuned(self, plan: dict[str, int], epochs: int | None = None) -> nn.Module:
        """The original pruned by ``plan`` and fine-tuned (with distillation) on the search split, for ``epochs``
        (default: the search's short fine-tune)."""
        pruned = self.pruned(plan)
        epochs = self.target.search_epochs if epochs is None else epochs
        if epochs == 0:
            return pruned
        torch.manual_seed(self.target.seed)
        step = FinetuneConfig(train={"epochs": epochs, "seed": self.target.seed},
                              distill=DistillConfig() if self.target.distill else None)  # fmt: skip
        context = TransformContext(example_inputs=self.data.example_inputs(2), dataset=self.search_data,
                                   teacher=self.model, progress=False)  # fmt: skip
        return run_transform(pruned, step, context).model.eval()

    # ---- the search ------------------------------------------------------------------------------------------
    def grid(self, group: str) -> list[int]:
        """The channel counts ``group`` may lose: its kept width a multiple of ``round_to`` (of 1 for groups
        narrower than twice that), at most ``levels`` of them, up to ``max_ratio``."""
        n = self.groups[group]
        r = self.target.round_to if n >= 2 * self.target.round_to else 1
        most = math.floor(n * self.target.max_ratio + 1e-9)
        grid = [n - kept for kept in range((n - 1) // r * r, 0, -r) if n - kept <= most]
        if len(grid) > self.target.levels:
            grid = sorted({grid[round(i * (len(grid) - 1) / (self.target.levels - 1))] for i in
                           range(self.target.levels)})  # fmt: skip
        return grid

    def proposals(self, plan: dict[str, int], current: float) -> list[tuple[str, dict[str, int]]]:
        """``(label, plan)`` proposals: per group, the fewest further channels on its grid that cut the objective
        by ``step`` (or, when the group alone cannot, its largest cut if that cuts at least a quarter step); and
        every group one grid level narrower (per-layer overheads can make only joint cuts pay); and every group at
        one common share (:meth:`uniform_proposal`: the smallest that cuts a step, and the smallest that cuts a
        quarter step, so that the path can pass through every uniform point). For ``latency+size``, only those the
        latency model does not predict slower than ``plan``."""
        goal = current * (1 - self.target.step)
        enough = current * (1 - self.target.step / 4)
        out: list[tuple[str, dict[str, int]]] = []
        joint = dict(plan)
        for g in self.groups:
            grid = [k for k in self.grid(g) if k > plan.get(g, 0)]
            if not grid:
                continue
            joint[g] = grid[0]
            lo, hi, found = 0, len(grid) - 1, None
            while lo <= hi:  # the objective falls as channels go: the fewest that reach the goal
                mid = (lo + hi) // 2
                if self.cost(self.pruned({**plan, g: grid[mid]})) <= goal:
                    found, hi = grid[mid], mid - 1
                else:
                    lo = mid + 1
            if found is None and self.cost(self.pruned({**plan, g: grid[-1]})) <= enough:
                found = grid[-1]
            if found is not None:
                out.append((g, {**plan, g: found}))
        changed = [g for g in self.groups if joint.get(g, 0) != plan.get(g, 0)]
        if len(changed) > 1 and self.cost(self.pruned(joint)) <= enough:
            out.append(("(every group)", joint))
        for aim in (goal, enough):  # the uniform cut that makes the step, and the gentlest one that counts
            uniform = self.uniform_proposal(plan, aim)
            if uniform is not None and all(uniform != p for _, p in out):
                out.append(("(uniform)", uniform))
        if self.target.objective == "latency+size":  # smaller *and* faster: no step buys size with latency
            now = self.latency.predict(self.pruned(plan))  # (narrow layers can run slower in int8 kernels)
            out = [(g, p) for g, p in out if self.latency.predict(self.pruned(p)) <= now * (1 + _LATENCY_SLACK)]
        return out

    def uniform_proposal(self, plan: dict[str, int], goal: float) -> dict[str, int] | None:
        """The uniform line through the search space: every group cut to one common share of its original channels
        (on its grid, never narrower than ``plan`` already is), at the smallest share that reaches ``goal`` (found by
        bisection); None when no share does or it changes nothing. Keeps the route a user would take by hand
        (uniform pruning) among the proposals."""
        shares = sorted({k / n for g, n in self.groups.items() for k in self.grid(g)})

        def at(share: float) -> dict[str, int]:
            cut = {g: max(plan.get(g, 0), max((k for k in self.grid(g) if k <= share * n + 1e-9), default=0))
                   for g, n in self.groups.items()}  # fmt: skip
            return {g: k for g, k in cut.items() if k > 0}

        current = {g: k for g, k in plan.items() if k > 0}
        lo, hi, found = 0, len(shares) - 1, None
        while lo <= hi:  # the objective falls as the share grows: the smallest share that reaches the goal
            mid = (lo + hi) // 2
            cut = at(shares[mid])
            if cut != current and self.cost(self.pruned(cut)) <= goal:
                found, hi = cut, mid - 1
            else:
                lo = mid + 1
        return found

    def snap(self, plan: dict[str, int], new: dict[str, int], current: float) -> dict[str, int]:
        """Latency is a staircase in the channel count, not a line: int8 and float kernels work on blocks of
        channels, so a layer a few channels narrower can run no faster, or slower. For latency objectives, each group
        of the chosen proposal ``new`` backs off to the cut between ``plan``'s and ``new``'s that the latency model
        predicts fastest: for ``latency`` when it is no slower (on ties the least cut: keeping channels keeps
        accuracy); for ``latency+size`` when it is faster by more than the slack and the step still cuts the
        objective by a quarter step (on ties the most cut). Other objectives: ``new`` unchanged."""
        if "latency" not in self.target.objective:
            return new
        enough = current * (1 - self.target.step / 4)
        best, best_ms = dict(new), self.latency.predict(self.pruned(new))
        for g in self.groups:
            low, high = plan.get(g, 0), best.get(g, 0)
            options = []
            for k in sorted({low, *(k for k in self.grid(g) if low < k < high)}):
                trial = {**best, g: k} if k else {h: v for h, v in best.items() if h != g}
                pruned = self.pruned(trial)
                ms = self.latency.predict(pruned)
                if self.target.objective == "latency+size" and self.cost(pruned) > enough:
                    continue  # backing off this far would undo the step
                options.append((ms, -k if self.target.objective == "latency+size" else k, trial))
            if not options:
                continue
            ms, _, trial = min(options, key=lambda o: (o[0], o[1]))  # fastest; ties: least cut (latency), most (+size)
            faster = ms <= best_ms if self.target.objective == "latency" else ms < best_ms * (1 - _LATENCY_SLACK)
            if faster:
                best, best_ms = trial, ms
        return best

    def choose(self, plan, current_model, current_cost, proposals) -> tuple[str, dict[str, int]]:
        """The proposal that costs the current model the least validation accuracy (cut without retraining) per
        share of the objective it removes."""
        base = self.accuracy(current_model)
        scored = []
        for label, new in proposals:
            extra = {g: (k - plan.get(g, 0)) / (self.groups[g] - plan.get(g, 0)) for g, k in new.items()
                     if k > plan.get(g, 0)}  # fmt: skip
            cut = copy.deepcopy(current_model)
            config = StructuredPruneConfig(criterion=self.target.criterion, ratio=0.0, seed=self.target.seed,
                                           per_layer={re.escape(g): r for g, r in extra.items()})  # fmt: skip
            _, p = plan_structured(cut, config, self.data.example_inputs(2))
            remove_channels_(cut, p)
            gain = max(1 - self.cost(self.pruned(new)) / current_cost, 1e-6)
            drop = max(base - self.accuracy(cut.eval()), 0.0) + 1e-3  # the epsilon prefers the larger gain on ties
            scored.append((drop / gain, label, new))
        best = min(scored, key=lambda t: t[0])
        return best[1], best[2]

    def point(self, index: int, plan: dict[str, int], model: nn.Module, group: str | None) -> SearchPoint:
        """The point of ``plan`` (``model``: its fine-tuned model), measured whole in the runtime: the latency
        model is refitted with it."""
        pruned = self.pruned(plan)
        latency, size, macs = self.costs(pruned)
        measured = self.latency.calibrate(pruned) if index > 0 else self.latency.reference_ms
        return SearchPoint(index, dict(plan), self.accuracy(model), latency, size, macs, group, measured)

    def run(self) -> TargetOutcome:
        target, started = self.target, time.monotonic()
        self.float_reference_ms = self.latency_model("pytorch").reference_ms
        self.bases = {"latency": self.float_reference_ms, "size": 4.0 * self.base_params}
        self.base_objective = self.base_cost()
        state = self.load_state()
        points = [SearchPoint.from_dict(p) for p in state.get("points", [])]
        stop = None if state.get("budget_spent") else state.get("stop")  # more budget: the search goes on
        for p in points[1:]:  # the measurements of a continued search refit the latency model as they did
            if p.measured_ms is not None:
                self.latency.calibrate(self.pruned(p.plan), measured_ms=p.measured_ms)
        if not points:
            points.append(self.point(0, {}, self.model, None))
            self.save_state(points, None)
        base_acc = points[0].accuracy

        def failed(p: SearchPoint) -> bool:
            return self.past_tolerance(p, base_acc)

        accepted = next(p for p in reversed(points) if not failed(p))  # the point the next step starts from
        current_model = (
            self.finetuned(accepted.plan, accepted.epochs) if accepted.index > 0 and stop is None else self.model
        )
        bar = None
        if self.progress and stop is None:
            from tqdm.auto import tqdm

            bar = tqdm(total=target.max_steps, initial=len(points) - 1, desc="target search", unit="step")
        try:
            while stop is None:
                if len(points) - 1 >= target.max_steps:
                    stop = f"the step budget ({target.max_steps}) is spent"
                    break
                if target.time_budget_s is not None and time.monotonic() - started > target.time_budget_s:
                    stop = f"the time budget ({target.time_budget_s:g} s) is spent"
                    break
                # proposals of this step that already failed (after the accepted point) are not tried again
                tried = [p for p in points[accepted.index + 1 :] if failed(p)]
                rejected = [p.plan for p in tried]
                current = self.cost(self.pruned(accepted.plan))  # predicted by the latency model as refitted now
                proposals = [(g, plan) for g, plan in self.proposals(accepted.plan, current) if plan not in rejected]
                if not proposals:
                    stop = (f"validation accuracy fell past twice the tolerance on every proposal of the step "
                            f"({len(tried)} tried)" if tried else
                            f"every group is at max_ratio ({target.max_ratio:g}) or no cut lowers the objective "
                            "enough")  # fmt: skip
                    break
                group, plan = self.choose(accepted.plan, current_model, current, proposals)
                snapped = self.snap(accepted.plan, plan, current)
                if snapped != plan and snapped != accepted.plan and snapped not in rejected:
                    log.info("search step %d: %s backs off to %s (predicted faster)", len(points), group,
                             _widths(snapped, self.groups))  # fmt: skip
                    group, plan = f"{group} (snapped)", snapped
                model = self.finetuned(plan)
                point = self.point(len(points), plan, model, group)
                if failed(point) and target.confirm and target.finetune_epochs > target.search_epochs:
                    model = self.finetuned(plan, target.finetune_epochs)  # the short fine-tune may understate it
                    point.accuracy, point.epochs = self.accuracy(model), target.finetune_epochs
                points.append(point)
                log.info("search step %d: %s cut (%s); val accuracy %.4f, %s %.4g (%.2fx)%s", point.index, group,
                         _widths(plan, self.groups), point.accuracy, target.objective,
                         self.value(point), self.base_objective / self.value(point),
                         " - past twice the tolerance, not kept" if failed(point) else
                         f" after a {point.epochs}-epoch fine-tune" if point.epochs else "")  # fmt: skip
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(acc=f"{100 * point.accuracy:.2f}%",
                                    ratio=f"{self.base_objective / self.value(point):.2f}x")
                if failed(point):
                    if len(tried) + 1 > target.retries:
                        stop = (f"validation accuracy fell past twice the tolerance ({len(tried) + 1} proposal(s) of "
                                "the step tried)")  # fmt: skip
                else:
                    accepted, current_model = point, model
                    if target.ratio is not None and self.base_objective / self.value(point) >= target.ratio:
                        stop = f"the objective ratio {target.ratio:g}x is reached"
                self.save_state(points, stop)
        finally:
            if bar is not None:
                bar.close()
            self.table.save()
        self.save_state(points, stop)
        log.info("search stopped after %d steps: %s", len(points) - 1, stop)
        return self.finish(points, stop)

    # ---- the final replay ------------------------------------------------------------------------------------
    def past_tolerance(self, point: SearchPoint, base_accuracy: float) -> bool:
        """Whether ``point``'s validation accuracy is more than twice the tolerance below the original's (never
        without a tolerance): the search does not step from it, and it is not a final candidate."""
        tol = self.target.tolerance
        return tol is not None and base_accuracy - point.accuracy > 2 * tol / 100 + 1e-9

    def candidates(self, points: list[SearchPoint]) -> list[SearchPoint]:
        """Points to replay, best objective first: those the search kept exploring (validation accuracy within
        twice the tolerance: a short fine-tune understates what the full one recovers, and the test set decides);
        ratio mode: the points that reach the ratio, least accuracy loss first."""
        base_acc, value = points[0].accuracy, self.value
        if self.target.ratio is not None:
            reach = [p for p in points[1:] if self.base_objective / value(p) >= self.target.ratio]
            return sorted(reach, key=lambda p: (-p.accuracy, value(p)))
        first = 0 if self.runtime == "onnxruntime-int8" else 1  # the original itself, quantized only
        ok = [p for p in points[first:] if not self.past_tolerance(p, base_acc)]
        return sorted(ok, key=lambda p: value(p))

    def recipe(self, point: SearchPoint, float_layers: list[str], runtime: str) -> Recipe:
        steps: list[Config] = []
        if any(point.plan.values()):
            steps.append(self.prune_config(point.plan))
        if self.target.finetune_epochs > 0 and any(point.plan.values()):
            steps.append(FinetuneConfig(train={"epochs": self.target.finetune_epochs, "seed": self.target.seed},
                                        distill=DistillConfig() if self.target.distill else None))  # fmt: skip
        if runtime == "onnxruntime-int8":
            steps.append(Int8Config(runtime="onnxruntime", fallback=False, ignore=tuple(float_layers)))
        if not steps:
            raise ConfigError("the chosen point changes nothing; loosen the target")
        return Recipe(steps, name=f"target-{self.target.objective}", description=(
            f"Found by effdl compress --target ({self.target.describe()}, batch {self.measure.batch_size}): "
            f"per-layer channel pruning, fine-tune with distillation, {runtime}."
        ))  # fmt: skip

    def precision(self, point: SearchPoint, runtime: str) -> list[str]:
        """Layers kept float so that int8 costs at most a quarter of the tolerance on validation."""
        if runtime != "onnxruntime-int8":
            return []
        model = self.finetuned(point.plan)
        tol = (self.target.tolerance if self.target.tolerance is not None else 1.0) / 400
        try:
            control = accuracy_controlled_config(
                model, Int8Config(runtime="onnxruntime"), metric=self.accuracy, tolerance=tol,
                example_inputs=self.example, data=[(self.example, None)], batches=1,
            )  # fmt: skip
        except ConfigError as exc:
            log.warning("int8 of the chosen point misses a quarter of the tolerance even with half the layers "
                        "float (%s); all layers int8, the final check decides", exc)  # fmt: skip
            return []
        return list(control.kept_float)

    def pick_runtime(self, point: SearchPoint) -> tuple[str, dict[str, float]]:
        """For the latency objective with ``runtime="auto"``, the runtime the table predicts fastest for the
        point (int8 and float onnxruntime, pytorch); otherwise the search runtime."""
        pruned = self.pruned(point.plan)
        predicted = {self.runtime: self.latency.predict(pruned)}
        if self.target.runtime == "auto" and self.target.objective == "latency" and self.runtime != "pytorch":
            for other in ("onnxruntime", "pytorch"):
                predicted[other] = self.latency_model(other).predict(pruned)
        return min(predicted, key=predicted.get), predicted

    def finish(self, points: list[SearchPoint], stop: str) -> TargetOutcome:
        target, value = self.target, self.value
        best = min(points[1:] or points, key=value)
        candidates = self.candidates(points)
        if not candidates:
            raise ConfigError(_impossible(target, points, self.base_objective, value, "no explored point meets it"))
        tries = []
        for i, point in enumerate(candidates[: target.final_tries]):
            runtime, predicted = self.pick_runtime(point)
            float_layers = self.precision(point, runtime)
            recipe = self.recipe(point, float_layers, runtime)
            run_dir = self.out / "runs" / f"point-{point.index:02d}"
            outcome = compress_model(self.model, self.data, recipe, out_dir=run_dir, measure=self.measure,
                                     progress=self.progress, command="compress-target-run")  # fmt: skip
            before = outcome.stages[0].summary.accuracy or 0.0
            after = outcome.stages[-1].summary.accuracy or 0.0
            measured = _measured(outcome, runtime)
            tries.append({"point": point.index, "runtime": runtime, "predicted_ms": predicted, "measured_ms": measured,
                          "accuracy": after, "float_layers": float_layers, "dir": str(run_dir)})  # fmt: skip
            ok = target.tolerance is None or 100 * (before - after) <= target.tolerance + 1e-9
            log.info("final try %d (point %d, %s): test accuracy %.4f (original %.4f)%s", i, point.index, runtime,
                     after, before, "" if ok else ": outside the tolerance")  # fmt: skip
            if ok:
                return self.report(points, point, outcome, runtime, float_layers, predicted[runtime], measured,
                                   stop, tries, recipe)  # fmt: skip
        raise ConfigError(_impossible(target, points, self.base_objective, value,
                                      f"{len(tries)} replayed candidate(s) missed it on the test set: " +
                                      "; ".join(f"point {t['point']}: {100 * t['accuracy']:.2f}%" for t in tries),
                                      best))  # fmt: skip

    def report(self, points, chosen, outcome, runtime, float_layers, predicted, measured, stop, tries, recipe):
        out, obj = self.out, self.target.objective
        recipe.save(out / "recipe.yaml")
        stages, deployment = outcome.stages, outcome.deployment
        first, last = stages[0].summary, stages[-1].summary
        lat = deployment.stage_latency_ms if deployment else {}
        base_ms = lat.get(stages[0].name, {}).get("median", first.latency_ms)
        final_ms = lat.get(stages[-1].name, {}).get("median", last.latency_ms)
        unpruned = [g for g in self.groups if chosen.plan.get(g, 0) == 0]
        left_out = [{"layer": g, "reason": "kept whole: the search found cheaper cuts elsewhere"} for g in unpruned]
        left_out += [{"layer": n, "reason": "kept float: int8 there cost the most accuracy"} for n in float_layers]
        details = {
            "target": self.target.to_dict(), "stop_reason": stop, "runtime": runtime,
            "batch_size": self.measure.batch_size, "threads": self.table.threads,
            "baseline": {"accuracy": first.accuracy, "size_bytes": first.size_bytes, "latency_ms": base_ms,
                         "macs": first.macs},
            "final": {"accuracy": last.accuracy, "size_bytes": last.size_bytes, "latency_ms": final_ms,
                      "macs": last.macs, "runtime": deployment.best if deployment else None},
            "smaller": first.size_bytes / max(last.size_bytes, 1), "faster": base_ms / max(final_ms, 1e-9),
            "latency_model": {"runtime": runtime, "predicted_ms": predicted, "measured_ms": measured,
                              "error": None if not measured else predicted / measured - 1,
                              "table_entries": len(self.table), "measured_now": self.table.measured},
            "chosen_point": chosen.index, "plan": {g: [self.groups[g] - chosen.plan.get(g, 0), self.groups[g]]
                                                  for g in self.groups},
            "float_layers": float_layers, "left_out": left_out, "tries": tries,
            "points": [p.to_dict() for p in points], "final_run": str(tries[-1]["dir"]),
        }  # fmt: skip
        atomic_write_json(out / "target.json", details)
        _plot(points, obj, chosen, self.base_objective, self.value, out / "front.png")
        atomic_write_text(out / "target.md", _markdown(self, details, points, chosen))
        return TargetOutcome(recipe, points, chosen, outcome, runtime, float_layers, predicted, measured, stop, details)

    # ---- state -----------------------------------------------------------------------------------------------
    def load_state(self) -> dict[str, Any]:
        path = self.out / _STATE
        if not path.is_file():
            return {}
        import json

        try:
            state = json.loads(path.read_text())
            [SearchPoint.from_dict(p) for p in state["points"]]
            if set().union(*(p["plan"] for p in state["points"])) - set(self.groups):
                raise KeyError("a group the model does not have")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path} is corrupt ({type(exc).__name__}: {exc}); start over with restart=True "
                              "(CLI: --restart) or use another output folder") from exc  # fmt: skip
        log.info("continuing the search in %s after %d steps", self.out, len(state["points"]) - 1)
        return state

    def save_state(self, points: list[SearchPoint], stop: str | None) -> None:
        atomic_write_json(self.out / _STATE, {"points": [p.to_dict() for p in points], "stop": stop,
                                              "budget_spent": stop is not None and "budget" in stop,
                                              "groups": self.groups, "runtime": self.runtime})  # fmt: skip


def _widths(plan: dict[str, int], groups: dict[str, int]) -> str:
    return ", ".join(f"{g} {n - plan.get(g, 0)}/{n}" for g, n in groups.items())


def _measured(outcome: CompressOutcome, runtime: str) -> float | None:
    """The final model's measured latency in the runtime the search predicted for."""
    d = outcome.deployment
    if d is None:
        return None
    key = {"onnxruntime-int8": "onnxruntime int8", "onnxruntime": "onnxruntime", "pytorch": "pytorch"}[runtime]
    return d.runtimes_ms.get(key)


def _impossible(target: TargetConfig, points: list[SearchPoint], base: float, value, why: str,
                best: SearchPoint | None = None) -> str:  # fmt: skip
    obj = target.objective
    best = best or min(points, key=lambda p: value(p))
    ok = [p for p in points if target.tolerance is None or points[0].accuracy - p.accuracy <= target.tolerance / 100]
    within = max(ok, key=lambda p: base / value(p)) if ok else points[0]
    return (
        f"the target ({target.describe()}) cannot be met: {why}. Best point reached: {base / value(best):.2f}x "
        f"{obj} at {100 * best.accuracy:.2f}% validation accuracy (original {100 * points[0].accuracy:.2f}%); "
        f"best within the tolerance: {base / value(within):.2f}x at {100 * within.accuracy:.2f}%. Loosen the "
        "tolerance or the ratio, or raise the budget (max_steps, final_tries, finetune_epochs)"
    )


def _plot(points: list[SearchPoint], obj: str, chosen: SearchPoint, base: float, value, path: Path) -> None:
    with saved_figure(path, size=(12, 4.8), ncols=2) as (_, axes):
        for ax, key, label in ((axes[0], obj, f"predicted {obj} ratio (original / point)"),
                               (axes[1], "size", "predicted size ratio")):  # fmt: skip
            xs = [base / value(p) for p in points] if key == obj else [
                points[0].size_bytes / p.size_bytes for p in points]
            ys = [100 * p.accuracy for p in points]
            ax.plot(xs, ys, "o-", ms=3, color="tab:blue", label="search path")
            front = pareto_front([(-x, y) for x, y in zip(xs, ys, strict=True)])
            ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="gray", label="Pareto front")
            ax.scatter([xs[chosen.index]], [ys[chosen.index]], color="tab:red", zorder=3, label="chosen")
            ax.set_xlabel(label)
            ax.set_ylabel("validation accuracy after short fine-tune (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)


def _markdown(search: _Search, d: dict[str, Any], points: list[SearchPoint], chosen: SearchPoint) -> str:
    obj, base, value = search.target.objective, search.base_objective, search.value
    b, f = d["baseline"], d["final"]
    lm = d["latency_model"]
    front = set(pareto_front([(value(p), p.accuracy) for p in points]))
    rows = [[str(p.index), p.chosen_group or "-",
             f"{100 * p.accuracy:.2f}%" + (f" ({p.epochs} ep.)" if p.epochs else ""), f"{p.latency_ms:.3f}",
             "-" if p.measured_ms is None else f"{p.measured_ms:.3f}",
             human_bytes(p.size_bytes), f"{p.macs:,}", f"{base / value(p):.2f}x",
             ("chosen" if p is chosen else "") + (" Pareto" if p.index in front else "")] for p in points]  # fmt: skip
    table = format_table(rows, ["step", "group cut", "val accuracy", f"pred. ms ({search.runtime})", "measured ms",
                                "pred. size", "MACs", f"{obj} ratio", ""], align="rlrrrrrrl")  # fmt: skip
    plan = format_table([[g, f"{k} of {n}", f"{1 - k / n:.0%}"] for g, (k, n) in d["plan"].items()],
                        ["group", "channels kept", "removed"], align="lrr")  # fmt: skip
    err = f"{100 * lm['error']:+.1f}%" if lm["error"] is not None else "n/a"
    measured = f"{lm['measured_ms']:.3f} ms" if lm["measured_ms"] else "not measured"
    left = "\n".join(f"- {e['layer']}: {e['reason']}" for e in d["left_out"]) or "- none"
    return (
        f"# Compression to a target\n\n{search.target.describe()}, batch {d['batch_size']}, {d['threads']} threads; "
        f"runtime {d['runtime']}. Search stopped: {d['stop_reason']}.\n\n"
        f"| | accuracy (test) | size | latency b{d['batch_size']} | MACs |\n|---|---:|---:|---:|---:|\n"
        f"| original | {100 * (b['accuracy'] or 0):.2f}% | {human_bytes(b['size_bytes'])} | {b['latency_ms']:.3f} ms "
        f"| {b['macs']:,} |\n| final ({f['runtime']}) | {100 * (f['accuracy'] or 0):.2f}% | "
        f"{human_bytes(f['size_bytes'])} | {f['latency_ms']:.3f} ms | {f['macs']:,} |\n\n"
        f"**{d['smaller']:.2f}x smaller, {d['faster']:.2f}x faster** (latencies measured side by side in the final "
        f"run; the original in PyTorch float).\n\nLatency model ({lm['runtime']}): predicted {lm['predicted_ms']:.3f} "
        f"ms, measured {measured} ({err}); table of {lm['table_entries']} layers, {lm['measured_now']} timed in this "
        f"run.\n\n## Plan\n\n{plan}\n\nLeft out:\n{left}\n\n## Explored points\n\nValidation accuracy after the "
        f"search's {search.target.search_epochs}-epoch fine-tune or, where marked, after the longer one a point past "
        f"twice the tolerance gets before it is given up.\n\n{table}\n\n"
        f"![Pareto front](front.png)\n\nFinal run: `{d['final_run']}` (its report.md has every stage); replay with "
        "`effdl compress recipe.yaml`.\n"
    )
