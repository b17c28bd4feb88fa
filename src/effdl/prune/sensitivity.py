"""Sensitivity analysis (Li et al., ICLR 2017, sec. 4.3): prune each group alone at several ratios, measure the
accuracy drop without retraining, and derive per-layer ratios from a tolerance."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from effdl.core.errors import ConfigError
from effdl.core.plot import saved_figure
from effdl.core.table import format_table
from effdl.data.loaders import split_validation
from effdl.prune.graph import build_dependency_graph
from effdl.prune.structured import StructuredPruneConfig, plan_structured
from effdl.prune.surgery import remove_channels_
from effdl.scale import ExecutorConfig, run_units

__all__ = ["SensitivityResult", "sensitivity_analysis", "sensitivity_config"]

log = logging.getLogger(__name__)

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclasses.dataclass
class SensitivityResult:
    """Accuracy of the unpruned model and, per group, ``[(ratio, accuracy), ...]``.

    Example:
        >>> r = SensitivityResult(0.9, {"conv1": [(0.25, 0.89), (0.5, 0.7)]})
        >>> r.ratios_for(0.02)
        {'conv1': 0.25}
    """

    baseline: float
    curves: dict[str, list[tuple[float, float]]]

    def ratios_for(self, tolerance: float) -> dict[str, float]:
        """Per group, the largest ratio whose accuracy (and that of every smaller ratio) stays within ``tolerance``
        (absolute, e.g. 0.01 = one point) of the baseline; groups that tolerate none are left out (ratio 0)."""
        out = {}
        for name, curve in self.curves.items():
            best = 0.0
            for ratio, acc in sorted(curve):
                if self.baseline - acc > tolerance:
                    break
                best = ratio
            if best > 0:
                out[name] = best
        return out

    def to_config(self, tolerance: float, base: StructuredPruneConfig | None = None) -> StructuredPruneConfig:
        """``base`` (default: a plain :class:`StructuredPruneConfig`) with ``per_layer`` ratios from
        :meth:`ratios_for` and ``ratio=0`` (other groups kept); every other setting of ``base`` is kept."""
        per_layer = {re.escape(k): v for k, v in self.ratios_for(tolerance).items()}
        return (base or StructuredPruneConfig()).replace(ratio=0.0, per_layer=per_layer)

    def to_table(self) -> str:
        """Accuracy drop (points) per group and ratio."""
        ratios = sorted({r for c in self.curves.values() for r, _ in c})
        rows = []
        for name, curve in self.curves.items():
            acc = dict(curve)
            rows.append([name, *(f"{100 * (self.baseline - acc[r]):+.1f}" if r in acc else "-" for r in ratios)])
        headers = ["group (accuracy drop, points)", *(f"{r:.0%}" for r in ratios)]
        return format_table(rows, headers, align="l" + "r" * len(ratios))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"baseline": self.baseline, "curves": {k: [list(p) for p in v] for k, v in self.curves.items()}}

    def plot(self, path: str | os.PathLike) -> Path:
        """Saves accuracy-vs-ratio curves, one line per group (needs matplotlib)."""
        with saved_figure(path) as (_, ax):
            for name, curve in self.curves.items():
                xs, ys = zip(*sorted(curve), strict=True)
                ax.plot([0, *xs], [100 * self.baseline, *(100 * y for y in ys)], marker="o", ms=3, label=name)
            ax.set_xlabel("fraction of the group's channels removed")
            ax.set_ylabel("test accuracy (%), no retraining")
            ax.set_title("Pruning sensitivity per layer")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
        return Path(path)


def sensitivity_analysis(
    model: nn.Module,
    eval_data: Dataset,
    example_inputs: Any,
    *,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    criterion: str = "l1",
    ignore: Sequence[str] = (),
    metric: Callable[[nn.Module, Dataset], float] | None = None,
    executor: ExecutorConfig | None = None,
    progress: bool = False,
) -> SensitivityResult:
    """Prunes every group alone at each of ``ratios`` (on a copy; ``model`` is unchanged) and evaluates it.

    Args:
        model: a trained model.
        eval_data: dataset to evaluate on (use a validation split to choose ratios).
        example_inputs: a batch, to trace the model.
        ratios: ratios to try, each in (0, 1).
        criterion: which channels go at each ratio.
        ignore: modules kept whole.
        metric: ``f(model, data) -> score``; default top-1 accuracy (a module-level function on other backends).
        executor: where the groups are evaluated, one unit per group (default: in this process); the
            result is the same on every backend.
        progress: show a progress bar.

    Returns:
        A :class:`SensitivityResult`.

    Raises:
        UnitsFailedError: a group's evaluation failed (the other groups finished); the error names it.
    """
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise ConfigError(f"ratios must each be in (0, 1), got {list(ratios)}; e.g. ratios=(0.25, 0.5, 0.75)")
    metric = metric or _accuracy
    graph = build_dependency_graph(model, example_inputs, ignore=ignore)
    baseline = metric(model, eval_data)
    executor = executor or ExecutorConfig()
    in_process = executor.backend == "local" and executor.workers == 1
    setup = {"criterion": criterion, "ignore": tuple(ignore), "ratios": tuple(ratios), "metric": metric}
    # in this process the graph traced above is reused; workers trace their own copy of the model
    shared = (model, eval_data, example_inputs, setup, graph if in_process else None)
    out = run_units(_evaluate_group, {g.name: g.name for g in graph.groups}, executor, shared=shared,
                    progress="sensitivity" if progress else None)  # fmt: skip
    out.raise_failures("groups", "the error names the group; leave it out with ignore=[...] or fix the model")
    log.info("sensitivity: %d groups x %d ratios, baseline %.4f", len(graph.groups), len(ratios), baseline)
    return SensitivityResult(baseline, {k: [tuple(p) for p in v] for k, v in out.results.items() if v})


def _accuracy(model: nn.Module, data: Dataset) -> float:
    from effdl.measure.evaluation import evaluate

    return evaluate(model, data)["accuracy"]


def _evaluate_group(shared: tuple, name: str) -> list[tuple[float, float]]:
    """One unit of :func:`sensitivity_analysis`: the group ``name`` pruned alone at each ratio, evaluated."""
    model, eval_data, example_inputs, setup, graph = shared
    if graph is None:
        graph = build_dependency_graph(model, example_inputs, ignore=setup["ignore"])
    curve = []
    for ratio in setup["ratios"]:
        trial = copy.deepcopy(model)
        cfg = StructuredPruneConfig(criterion=setup["criterion"], ratio=0.0, per_layer={re.escape(name): ratio})
        _, plan = plan_structured(trial, cfg, example_inputs, graph=graph)
        if plan.num_removed == 0:
            continue
        remove_channels_(trial, plan)
        curve.append((ratio, setup["metric"](trial, eval_data)))
    return curve


def sensitivity_config(
    model: nn.Module, data: Any, config: StructuredPruneConfig, tolerance: float, *, progress: bool = False
) -> tuple[StructuredPruneConfig, SensitivityResult]:
    """Runs :func:`sensitivity_analysis` on a validation split (10% of ``data.train``) and returns ``config`` with
    the per-layer ratios that lose at most ``tolerance`` accuracy (every other setting kept), and the analysis.

    Args:
        model: the trained model (not changed).
        data: its dataset splits.
        config: the structured pruning settings (criterion, ignore, round_to, ... are kept).
        tolerance: accuracy each layer may lose, e.g. 0.01.
        progress: progress bar.
    """
    if not isinstance(config, StructuredPruneConfig):
        raise ConfigError(
            f"sensitivity analysis chooses per-layer ratios of structured pruning, got {type(config).__name__}; "
            "use a structured method (e.g. --method l1)"
        )
    _, val = split_validation(data.train, 0.1, seed=0)
    result = sensitivity_analysis(
        model, val, data.example_inputs(2), criterion=config.criterion, ignore=config.ignore, progress=progress
    )
    return result.to_config(tolerance, base=config), result
