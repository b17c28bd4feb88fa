"""Label-budget allocation across tasks (Sun, Sohn, Saenko, Mellina, Bian, "Label Budget Allocation in Multi-Task
Learning", arXiv 2308.12949): given a total budget and a labelling cost per task, how many images to label for each
task. Fixed strategies (uniform count, uniform cost, cost-proportional) and a task-adaptive allocator that estimates,
from short pilot trainings, how much the multi-task objective gains per label of each task and how far that estimate
can be trusted, and spends the budget in proportion to the trusted gain per unit of cost.

A multi-task network learns from partly labelled images: each task's labels cover its own subset of the pool (the
target dict's ``MASK_KEY`` entry says which), and each task's loss averages over its labelled images only."""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
from collections.abc import Callable, Mapping
from typing import Any

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
    """What the pilot runs measured: the labels per task of the base run, each task's labels in its grown run, the
    gain of each task's grown run (multi-task gain in percent against the base run) and, where the pilot could
    measure it, each gain's standard error (see :func:`pilot_gains`).

    Example:
        >>> est = PilotEstimate({"a": 50, "b": 50}, {"a": 100, "b": 100}, {"a": 4.0, "b": 1.0}, {"a": 0.5, "b": 0.5})
        >>> {t: round(g, 2) for t, g in est.shrunk().items()}  # a real difference: shrunk only a little
        {'a': 3.83, 'b': 1.17}
    """

    base: dict[str, int]
    grown: dict[str, int]
    gains: dict[str, float]
    noise: dict[str, float] | None = None

    def shrunk(self) -> dict[str, float]:
        """The gains pulled toward their mean as far as their noise says (empirical Bayes: the tasks' true gains
        are taken as drawn from one normal prior whose mean is the gains' mean and whose variance is the gains'
        spread less their mean noise variance; each gain's posterior mean). Gains that differ by no more than
        their noise all become the mean, and the allocation falls back to spending alike per task (uniform cost)."""
        if not self.noise or len(self.gains) < 2:
            return dict(self.gains)
        mean = statistics.fmean(self.gains.values())
        spread = statistics.pvariance(self.gains.values(), mu=mean)
        prior = max(spread - statistics.fmean(v * v for v in self.noise.values()), 0.0)
        return {t: mean + (prior / (prior + self.noise[t] ** 2) if prior > 0 else 0.0) * (g - mean)
                for t, g in self.gains.items()}  # fmt: skip

    def slopes(self) -> dict[str, float]:
        """Estimated gain (percent) per doubling of each task's labels (from its shrunk gain), at least a small
        positive floor."""
        return {t: max(g / math.log2(self.grown[t] / self.base[t]), 1e-3) for t, g in self.shrunk().items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, with the shrunk gains."""
        return {**dataclasses.asdict(self), "shrunk": self.shrunk()}


def pilot_gains(
    train_and_score: Callable[[dict[str, int]], dict[str, float]],
    specs: Mapping[str, TaskSpec],
    base: Mapping[str, int],
    *,
    grow: float = 2.0,
) -> PilotEstimate:
    """Runs ``1 + tasks`` pilot trainings: the ``base`` labels per task, then each task alone grown ``grow``-fold.
    ``train_and_score(counts) -> metrics`` trains on an allocation and returns each task's metric, measured on data
    that is not the final test set.

    A task's gain is the multi-task gain (:func:`delta_mtl` over all tasks, so its labels are credited with what
    they bring to the other tasks too) of its grown run against the base run. Its noise comes from the same runs:
    each task's metric should not move across the runs in which its own labels stay the same, so its spread there
    (training noise, plus whatever the other tasks' extra labels transfer, which makes the estimate cautious) is the
    noise of one run; a gain, a difference of two runs, has twice that variance. :meth:`PilotEstimate.shrunk` weighs
    the gains against it.

    Example:
        >>> specs = {"a": TaskSpec("label", 2), "b": TaskSpec("label", 2)}
        >>> fake = lambda counts: {"a": 0.5 + counts["a"] / 1000, "b": 0.5 + counts["a"] / 2000}
        >>> est = pilot_gains(fake, specs, {"a": 50, "b": 50})
        >>> est.grown, round(est.gains["a"], 2), round(est.gains["b"], 2)  # b's labels bring nothing
        ({'a': 100, 'b': 100}, 6.93, 0.0)
    """
    base = {t: int(base[t]) for t in specs}
    if any(n < 1 for n in base.values()) or not grow > 1:
        raise ConfigError(f"the pilot needs at least 1 base label per task and grow > 1, got base={base}, "
                          f"grow={grow}")  # fmt: skip
    grown = {t: max(n + 1, round(n * grow)) for t, n in base.items()}
    reference = train_and_score(dict(base))
    zero = [t for t in specs if not reference[t]]
    if zero:
        raise ConfigError(f"task(s) {zero} scored exactly 0 in the pilot's base run, so no gain can be measured "
                          "relative to it; give the pilot more labels (a larger pilot share or budget) or train "
                          "longer (more steps)")  # fmt: skip
    runs = {t: train_and_score({**base, t: grown[t]}) for t in specs}
    gains = {t: delta_mtl(runs[t], reference, specs) for t in specs}
    var = 0.0
    for u in specs:  # u's metric where u's labels are the base ones: the base run and the other tasks' grown runs
        same = [reference[u], *(runs[t][u] for t in specs if t != u)]
        if len(same) > 1:
            var += (100 * statistics.stdev(same) / abs(statistics.fmean(same))) ** 2
    noise = math.sqrt(2 * var) / len(specs)
    for t in specs:
        log.info("pilot: %s labels %d -> %d: multi-task gain %+.2f%% (noise %.2f)", t, base[t], grown[t], gains[t],
                 noise)  # fmt: skip
    return PilotEstimate(base, grown, gains, {t: noise for t in specs} if len(specs) > 1 else None)


def adaptive_allocation(estimate: PilotEstimate, costs: Mapping[str, float], budget: float,
                        pool: int) -> dict[str, int]:  # fmt: skip
    """Task-adaptive allocation: models each task's contribution to the multi-task objective as
    ``slope_t * log2(labels_t)`` (diminishing returns; the slope from the pilot's shrunk gain) and maximises the sum
    within the budget, so labels go in proportion to ``slope_t / cost_t``. Every task keeps at least the labels its
    pilot bought (``estimate.grown``: they are paid for) and at most ``pool``; counts are rounded down. Where the
    slopes are equal (a pilot that found no difference beyond its noise) this is exactly uniform cost.

    Example:
        >>> est = PilotEstimate({"a": 10, "b": 10}, {"a": 20, "b": 20}, {"a": 4.0, "b": 1.0})
        >>> adaptive_allocation(est, {"a": 1.0, "b": 1.0}, 1000, 10_000)  # a's labels are worth 4x: it gets 4/5
        {'a': 800, 'b': 200}
    """
    _check(costs, budget)
    missing = set(costs) - set(estimate.grown)
    if missing:
        raise ConfigError(f"the pilot estimate has no gain for task(s) {sorted(missing)}; run the pilot on every "
                          "task the budget is for")  # fmt: skip
    floor = {t: min(estimate.grown[t], pool) for t in costs}
    paid = sum(floor[t] * costs[t] for t in costs)
    if paid > budget + 1e-9:
        raise ConfigError(f"the pilot's labels ({floor}) already cost {paid:g}, more than the budget of {budget:g}; "
                          "give the pilot a smaller share of the budget")  # fmt: skip
    # maximise sum slope_t log n_t subject to sum cost_t n_t <= budget, floor_t <= n_t <= pool: n_t is proportional
    # to slope_t / cost_t, except where that falls below the floor; those tasks stay at their floor (as the rest's
    # share only shrinks when one is held up, a task once below stays below) and the others share what is left
    slopes = estimate.slopes()
    held: set[str] = set()
    while True:
        free = {t: slopes[t] / costs[t] for t in costs if t not in held}
        left = budget - sum(floor[t] * costs[t] for t in held)
        counts = {**_cap(free, {t: costs[t] for t in free}, left, pool), **{t: floor[t] for t in held}}
        below = {t for t in free if counts[t] < floor[t]}
        if not below:
            return {t: counts[t] for t in costs}
        held |= below
