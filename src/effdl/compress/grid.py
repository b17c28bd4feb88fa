"""Sweeps: a grid over fields of a recipe (e.g. pruning ratio x bit width), each point compressed with
:func:`~effdl.compress.compress_model`, then a table and the Pareto front of accuracy against latency and size."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import os
import re
import statistics
from pathlib import Path
from typing import Any

from torch import nn

from effdl.compress.pipeline import compress_model, legacy_measure
from effdl.compress.recipe import Recipe
from effdl.compress.report import pareto_front, plot_pareto
from effdl.core.checkpoint import tensors_digest
from effdl.core.errors import ConfigError
from effdl.core.io import atomic_write_json, atomic_write_text
from effdl.core.rundir import claim_run_dir, run_identity
from effdl.core.table import format_table, human_bytes
from effdl.data.base import DatasetSplits
from effdl.measure.summary import MeasureConfig
from effdl.scale import ExecutorConfig, run_trials

__all__ = ["SweepPoint", "set_field", "sweep"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SweepPoint:
    """One recipe of the grid and where its compressed model ended up."""

    name: str
    settings: dict[str, Any]
    accuracy: float
    size_bytes: int
    latency_ms: float
    baseline_latency_ms: float
    baseline_size_bytes: int
    out_dir: str
    baseline_accuracy: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return dataclasses.asdict(self)


def set_field(recipe: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of a recipe's plain form with the field at ``path`` (dot-separated keys and step indices, e.g.
    ``steps.0.ratio``) set to ``value``.

    Example:
        >>> set_field({"steps": [{"type": "StructuredPruneConfig", "ratio": 0.5}]}, "steps.0.ratio", 0.25)
        {'steps': [{'type': 'StructuredPruneConfig', 'ratio': 0.25}]}
    """
    data = copy.deepcopy(recipe)
    node: Any = data
    keys = path.split(".")
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"sweep field {path!r}: {key!r} is not a step index below {len(node)}")
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                if node.get(key) is None:
                    node[key] = {}
                node = node[key]
        else:
            raise ConfigError(f"sweep field {path!r}: cannot go into {node!r} at {key!r}")
    return data


def sweep(
    model: nn.Module,
    data: DatasetSplits,
    recipe: Recipe,
    grid: dict[str, list[Any]],
    *,
    out_dir: str | os.PathLike,
    measure: MeasureConfig | None = None,
    executor: ExecutorConfig | None = None,
    progress: bool = True,
    **legacy: Any,
) -> list[SweepPoint]:
    """Compresses ``model`` with every combination of ``grid`` values applied to ``recipe`` (each into its own
    folder under ``OUT/runs``, so that an interrupted sweep continues where it stopped), then writes
    ``sweep.md``, ``sweep.json`` and ``pareto.png`` into ``OUT``.

    Args:
        grid: ``{field path: values}``, e.g. ``{"steps.0.ratio": [0.25, 0.5, 0.75]}``.
        measure: latency measurement (default: batch 32, 30 repeats).
        executor: where the points run (default: one after another in this process). With
            ``ExecutorConfig(backend="ray")`` each point is a Ray Tune trial with ``cpus_per_unit`` CPUs; a sweep
            whose driver died continues its Tune experiment (``OUT/tune``). Points measured side by side on one
            machine share its cores: compare latencies within a point (each point times its baseline beside it).
        **legacy: ``batch_size``, ``threads``, ``repeats`` of the previous release (deprecated: use ``measure``).
    """
    measure = legacy_measure(measure, legacy, "sweep")
    if not grid or any(not isinstance(v, list | tuple) or not v for v in grid.values()):
        raise ConfigError("a sweep grid maps recipe fields to non-empty lists, e.g. {'steps.0.ratio': [0.5]}")
    out = Path(out_dir)
    identity = run_identity(recipe=recipe.to_dict()["steps"], grid=grid, model=tensors_digest(model.state_dict()),
                            data=data.fingerprint(), batch_size=measure.batch_size)  # fmt: skip
    with claim_run_dir(out, command="sweep", identity=identity, resume=True):
        return _sweep(model, data, recipe, grid, out, measure, progress, executor or ExecutorConfig())


def _sweep(model, data, recipe, grid, out: Path, measure: MeasureConfig, progress: bool, executor) -> list[SweepPoint]:
    base = recipe.to_dict()
    trials = {}
    for i, values in enumerate(itertools.product(*grid.values())):
        settings = dict(zip(grid, values, strict=True))
        plain = base
        for path, value in settings.items():
            plain = set_field(plain, path, value)
        name = ", ".join(f"{p.split('.')[-1]}={v}" for p, v in settings.items())
        plain["name"] = f"{recipe.name or 'recipe'} [{name}]"
        run_dir = (out / "runs" / f"{i:02d}-{_slug(name)}").absolute()
        trials[f"{i:02d}"] = {"name": name, "settings": settings, "recipe": plain, "run_dir": str(run_dir)}
    in_process = executor.backend == "local" and executor.workers == 1
    shared = (model, data, measure, progress and in_process)
    outcome = run_trials(_sweep_point, trials, executor, shared=shared, storage=out / "tune",
                         progress=None if in_process else f"sweep of {len(trials)}")  # fmt: skip
    outcome.raise_failures(
        "sweep points",
        f"the finished points are kept in {out / 'runs'}: fix the cause and run the same sweep again to compute "
        "only the missing ones",
    )
    points = [SweepPoint(**outcome.results[k]) for k in trials]
    _write(points, out, measure.batch_size)
    return points


def _sweep_point(shared: tuple, params: dict, report) -> dict[str, Any]:
    """One point of a sweep (a unit or a Ray Tune trial): compresses into its own folder and returns its figures;
    a point finished before (its ``point.json`` is there) is not computed again."""
    model, data, measure, progress = shared
    run_dir = Path(params["run_dir"])
    done = run_dir / "point.json"
    if done.exists():
        log.info("sweep point %s: finished before, kept", params["name"])
        return json.loads(done.read_text())
    log.info("sweep point %s", params["name"])
    result = compress_model(model, data, Recipe.from_dict(params["recipe"]), out_dir=run_dir, measure=measure,
                            progress=progress)  # fmt: skip
    lat = result.deployment.stage_latency_ms if result.deployment else {}
    last, first = result.stages[-1], result.stages[0]
    point = SweepPoint(
        name=params["name"],
        settings=params["settings"],
        accuracy=last.summary.accuracy or 0.0,
        size_bytes=last.summary.size_bytes,
        latency_ms=lat.get(last.name, {}).get("median", last.summary.latency_ms),
        baseline_latency_ms=lat.get("baseline", {}).get("median", first.summary.latency_ms),
        baseline_size_bytes=first.summary.size_bytes,
        baseline_accuracy=first.summary.accuracy or 0.0,
        out_dir=str(run_dir),
    ).to_dict()
    report({"accuracy": point["accuracy"], "latency_ms": point["latency_ms"], "size_bytes": point["size_bytes"]})
    atomic_write_json(done, point)
    return point


def _write(points: list[SweepPoint], out: Path, batch_size: int) -> None:
    front = set(pareto_front([(p.latency_ms / p.baseline_latency_ms, p.accuracy) for p in points]))
    rows = [
        [p.name, f"{100 * p.accuracy:.2f}%", human_bytes(p.size_bytes), f"{p.baseline_size_bytes / p.size_bytes:.2f}x",
         f"{p.latency_ms:.3f} ms", f"{p.baseline_latency_ms / p.latency_ms:.2f}x", "yes" if i in front else ""]
        for i, p in enumerate(points)
    ]  # fmt: skip
    headers = ["settings", "accuracy", "size", "smaller", f"latency (b{batch_size})", "faster", "Pareto"]
    table = format_table(rows, headers, align="lrrrrrl")
    base_accuracy, base_size = points[0].baseline_accuracy, points[0].baseline_size_bytes
    baseline = f"baseline: {100 * base_accuracy:.2f}%, {human_bytes(base_size)}"
    text = f"# Sweep\n\n{baseline}; latency ratios measured side by side within each run.\n\n{table}\n\n"
    plot = plot_pareto(
        ["baseline", *(p.name for p in points)],
        [base_accuracy, *(p.accuracy for p in points)],
        [statistics.median([p.baseline_latency_ms for p in points]), *(p.latency_ms for p in points)],
        [float(base_size), *(float(p.size_bytes) for p in points)],
        out / "pareto.png",
        title=f"sweep of {len(points)} recipes (baseline red), batch {batch_size}",
    )
    atomic_write_text(out / "sweep.md", text + "![Pareto plot](pareto.png)\n")
    atomic_write_json(out / "sweep.json", {"points": [p.to_dict() for p in points], "pareto": sorted(front),
                                           "plot": str(plot)})  # fmt: skip


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=]+", "_", text).strip("_")[:60]
