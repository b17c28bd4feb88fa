"""Label-budget allocation across tasks (Sun, Sohn, Saenko, Mellina, Bian, "Label Budget Allocation in Multi-Task
Learning", arXiv 2308.12949): given a total budget and a labelling cost per task, how many images to label for each
task. Fixed strategies (uniform count, uniform cost, cost-proportional) and a task-adaptive allocator that estimates,
from short pilot trainings, how much the multi-task objective gains per label of each task, and spends the budget
greedily where the estimated gain per unit of cost is highest.

A multi-task network learns from partly labelled images: each task's labels cover its own subset of the pool (the
target dict's ``MASK_KEY`` entry says which), and each task's loss averages over its labelled images only."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping

import torch
from torch.utils.data import Dataset

from effdl.core.errors import ConfigError
from effdl.multitask.tasks import TaskSpec
from effdl.multitask.training import MASK_KEY, delta_mtl

__all__ = [
    "ALLOCATIONS",
    "LabelledSubsets",
    "PilotEstimate",
    "adaptive_allocation",
    "fixed_allocation",
    "pilot_gains",
]

log = logging.getLogger(__name__)

#: the fixed strategies: labels per task proportional to 1, to 1/cost (same spend per task), or to cost
ALLOCATIONS = ("uniform-count", "uniform-cost", "cost-proportional")


def _check(costs: Mapping[str, float], budget: float) -> None:
    if not costs:
        raise ConfigError("no tasks to allocate labels to")
    bad = {t: c for t, c in costs.items() if not c > 0}
    if bad:
        raise ConfigError(f"label costs must be positive, got {bad}")
    if not budget > 0:
        raise ConfigError(f"the label budget must be positive, got {budget}")


def _cap(shares: Mapping[str, float], costs: Mapping[str, float], budget: float, pool: int) -> dict[str, int]:
    """Labels per task proportional to ``shares`` spending ``budget``, at most ``pool`` per task (what a capped task
    cannot spend goes to the others), rounded down."""
    alloc: dict[str, float] = {}
    free = dict(shares)
    left = budget
    while free:
        scale = left / sum(shares[t] * costs[t] for t in free)
        over = [t for t in free if shares[t] * scale > pool]
        if not over:
            alloc.update({t: shares[t] * scale for t in free})
            break
        for t in over:
            alloc[t] = pool
            left -= pool * costs[t]
            del free[t]
    return {t: math.floor(alloc[t] + 1e-9) for t in costs}


def fixed_allocation(strategy: str, costs: Mapping[str, float], budget: float, pool: int) -> dict[str, int]:
    """Labels per task under a fixed strategy (see :data:`ALLOCATIONS`), spending at most ``budget`` with at most
    ``pool`` labels per task.

    Example:
        >>> costs = {"seg": 4.0, "count": 1.0}
        >>> fixed_allocation("uniform-count", costs, 100, 1000), fixed_allocation("uniform-cost", costs, 100, 1000)
        ({'seg': 20, 'count': 20}, {'seg': 12, 'count': 50})
    """
    _check(costs, budget)
    if strategy == "uniform-count":
        shares = {t: 1.0 for t in costs}
    elif strategy == "uniform-cost":
        shares = {t: 1.0 / c for t, c in costs.items()}
    elif strategy == "cost-proportional":
        shares = dict(costs)
    else:
        raise ConfigError(f"unknown allocation strategy {strategy!r}; the strategies are {', '.join(ALLOCATIONS)}, "
                          "or adaptive_allocation()")  # fmt: skip
    return _cap(shares, costs, budget, pool)


class LabelledSubsets(Dataset):
    """Images of a pool with labels for some tasks only: task ``t`` is labelled on the first ``counts[t]`` images
    of its own seeded ordering of the pool (so a larger count labels a superset). Only images with at least one
    label are items, unless ``keep_unlabelled`` (then every image is, and allocations of one pool train on the same
    batches: only their labels differ); each item's targets carry ``MASK_KEY``: ``(tasks,)`` bools in ``tasks``
    order.

    Example:
        >>> from effdl.data import render_scenes
        >>> pool = render_scenes(20, size=16).dataset()
        >>> d = LabelledSubsets(pool, ("segment", "count"), {"segment": 3, "count": 10})
        >>> len(d) >= 10, int(sum(d[i][1][MASK_KEY][0] for i in range(len(d))))
        (True, 3)
    """

    def __init__(self, pool: Dataset, tasks: tuple[str, ...], counts: Mapping[str, int], *, seed: int = 0,
                 keep_unlabelled: bool = False) -> None:  # fmt: skip
        n = len(pool)  # type: ignore[arg-type]
        self.pool, self.tasks = pool, tuple(tasks)
        labelled = torch.zeros(n, len(tasks), dtype=torch.bool)
        for i, t in enumerate(tasks):
            k = int(counts.get(t, 0))
            if not 0 <= k <= n:
                raise ConfigError(f"{k} labels of task {t!r} asked from a pool of {n} images")
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1009 + i))
            labelled[order[:k], i] = True
        self.labelled = labelled
        self.indices = torch.arange(n) if keep_unlabelled else torch.nonzero(labelled.any(dim=1)).flatten()
        if not bool(labelled.any()):
            raise ConfigError("no image has a label: give at least one task a positive count")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        x, y = self.pool[j]
        return x, {**y, MASK_KEY: self.labelled[j]}


@dataclasses.dataclass
class PilotEstimate:
    """What the pilot runs measured: the score of the base allocation, each task's gain when its labels grow from
    ``base`` to ``grown`` (multi-task gain in percent against the base run), and the fitted log-curve slope per
    task (gain per doubling of its labels)."""

    base: int
    grown: int
    gains: dict[str, float]

    def slope(self, task: str) -> float:
        """Estimated gain (percent) per doubling of the task's labels, at least a small positive floor."""
        return max(self.gains[task] / math.log2(self.grown / self.base), 1e-3)


def pilot_gains(
    train_and_score: Callable[[dict[str, int]], dict[str, float]],
    specs: Mapping[str, TaskSpec],
    *,
    base: int,
    grown: int,
) -> PilotEstimate:
    """Runs ``1 + tasks`` pilot trainings: every task at ``base`` labels, then each task alone grown to ``grown``
    labels; the gain of a task is the multi-task gain (:func:`delta_mtl`, over all tasks' metrics, so a task's
    labels are credited with what they bring to the other tasks too) of its grown run against the base run.
    ``train_and_score(counts) -> metrics`` trains on an allocation and returns each task's metric.

    Example:
        >>> specs = {"a": TaskSpec("label", 2), "b": TaskSpec("label", 2)}
        >>> fake = lambda counts: {"a": 0.5 + counts["a"] / 1000, "b": 0.5 + counts["a"] / 2000}
        >>> est = pilot_gains(fake, specs, base=50, grown=100)
        >>> round(est.gains["a"], 2), round(est.gains["b"], 2)
        (6.93, 0.0)
    """
    if not 0 < base < grown:
        raise ConfigError(f"pilot label counts need 0 < base < grown, got base={base}, grown={grown}")
    base_counts = {t: base for t in specs}
    reference = train_and_score(base_counts)
    gains = {}
    for t in specs:
        metrics = train_and_score({**base_counts, t: grown})
        gains[t] = delta_mtl(metrics, reference, specs)
        log.info("pilot: %s labels %d -> %d: multi-task gain %+.2f%%", t, base, grown, gains[t])
    return PilotEstimate(base=base, grown=grown, gains=gains)


def adaptive_allocation(estimate: PilotEstimate, costs: Mapping[str, float], budget: float, pool: int, *,
                        step: int = 10, floor: int | None = None) -> dict[str, int]:  # fmt: skip
    """Task-adaptive allocation: models each task's contribution to the multi-task objective as
    ``slope_t * log2(labels_t)`` (diminishing returns, fitted by the pilot) and spends the budget ``step`` labels
    at a time on the task with the largest estimated gain per unit of cost, starting every task at ``floor`` labels
    (default ``step``; the pilot's base count is a good floor: the estimate says nothing below it).

    Example:
        >>> est = PilotEstimate(base=50, grown=100, gains={"a": 4.0, "b": 1.0})
        >>> adaptive_allocation(est, {"a": 1.0, "b": 1.0}, 1000, 10_000)  # a's labels are worth 4x: it gets ~4/5
        {'a': 800, 'b': 200}
    """
    _check(costs, budget)
    start = floor if floor is not None else step
    counts = {t: min(start, pool) for t in costs}
    spent = sum(counts[t] * costs[t] for t in costs)
    if spent > budget:
        raise ConfigError(f"a budget of {budget} cannot label {start} images of every task (that costs {spent}); "
                          "raise the budget or lower the floor")  # fmt: skip
    while True:
        best, value = None, 0.0
        for t, c in costs.items():
            if counts[t] + step > pool or spent + step * c > budget + 1e-9:
                continue
            gain = estimate.slope(t) * math.log2((counts[t] + step) / counts[t]) / (step * c)
            if gain > value:
                best, value = t, gain
        if best is None:
            return counts
        counts[best] += step
        spent += step * costs[best]
