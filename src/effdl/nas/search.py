"""Proxy-guided architecture search: random search and regularized evolution (Real et al., AAAI 2019) that
maximize a zero-cost proxy under a MAC or measured-latency budget, in seconds instead of GPU-days."""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from effdl.core.config import Config, check_choice, check_range
from effdl.core.errors import ConfigError
from effdl.core.table import format_table, human_count
from effdl.measure.latency import measure_latency
from effdl.measure.macs import count_macs
from effdl.measure.size import count_params
from effdl.nas.proxies import PROXIES, score_model
from effdl.nas.space import Architecture, SearchSpace, get_space

__all__ = ["Candidate", "SearchConfig", "SearchResult", "search_architectures"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchConfig(Config):
    """How to search.

    Attributes:
        proxy: the proxy to maximize (see ``PROXIES``).
        method: ``evolution`` (regularized evolution: tournament selection, mutation, the oldest dies) or
            ``random``.
        budget_macs: keep architectures with at most this many MACs per example (None: no limit).
        budget_latency_ms: keep architectures whose measured batch-1 CPU latency is at most this (None: no limit).
        samples: architectures scored (within the budget).
        time_limit_s: stop after this many seconds even if fewer were scored.
        population, tournament: the evolution's population size and tournament sample size.
        top_k: how many of the best to return.
        seed: seed of the sampler (random draws, tournaments, mutations).
        init_seed: seed of the weights each architecture is scored at (and the winner trained from); 0 matches
            the committed ground truth.

    Example:
        >>> SearchConfig(budget_macs=100_000).method
        'evolution'
    """

    proxy: str = "zico"
    method: str = "evolution"
    budget_macs: int | None = None
    budget_latency_ms: float | None = None
    samples: int = 200
    time_limit_s: float = 300.0
    population: int = 20
    tournament: int = 5
    top_k: int = 5
    seed: int = 0
    init_seed: int = 0

    def validate(self) -> None:
        """Checks every field."""
        check_choice("proxy", self.proxy, PROXIES.names())
        check_choice("method", self.method, ("evolution", "random"))
        if self.budget_macs is not None:
            check_range("budget_macs", self.budget_macs, 1, hint="use budget_macs=200000")
        if self.budget_latency_ms is not None:
            check_range("budget_latency_ms", self.budget_latency_ms, 0.0, low_open=True, hint="use 0.5")
        check_range("samples", self.samples, 1, hint="use samples=200")
        check_range("time_limit_s", self.time_limit_s, 0.0, low_open=True, hint="use time_limit_s=300")
        check_range("population", self.population, 2, hint="use population=20")
        check_range("tournament", self.tournament, 1, hint="use tournament=5")
        if self.tournament > self.population:
            raise ConfigError(f"tournament ({self.tournament}) must not exceed population ({self.population})")
        check_range("top_k", self.top_k, 1, hint="use top_k=5")


@dataclasses.dataclass
class Candidate:
    """A scored architecture."""

    arch: str
    score: float
    macs: int
    params: int
    latency_ms: float | None = None
    accuracy: float | None = None  # filled in when the winner is trained

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SearchResult:
    """The best candidates (by proxy score, descending) and the search's bookkeeping."""

    best: list[Candidate]
    scored: int
    rejected: int
    seconds: float
    config: SearchConfig
    history: list[float]  # best score after each scored architecture

    def to_table(self) -> str:
        """The best candidates as a table."""
        rows = [
            [
                i + 1,
                c.arch,
                f"{c.score:.4g}",
                human_count(c.macs),
                human_count(c.params),
                "-" if c.latency_ms is None else f"{c.latency_ms:.3f}",
                "-" if c.accuracy is None else f"{100 * c.accuracy:.2f}%",
            ]
            for i, c in enumerate(self.best)
        ]
        headers = ["rank", "architecture", self.config.proxy, "MACs", "params", "latency ms", "trained acc."]
        return format_table(rows, headers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "config": self.config.to_dict(),
            "best": [c.to_dict() for c in self.best],
            "scored": self.scored,
            "rejected": self.rejected,
            "seconds": self.seconds,
            "history": self.history,
        }


def search_architectures(
    space: str | SearchSpace,
    batches: Sequence[tuple],
    config: SearchConfig | None = None,
    *,
    train_fn: Callable[[torch.nn.Module], float] | None = None,
    progress: bool = False,
) -> SearchResult:
    """Searches ``space`` for the architectures with the highest proxy score within the budget.

    Args:
        space: a registered search space name or a :class:`SearchSpace`.
        batches: ``(inputs, targets)`` mini-batches the proxy is computed on (ZiCo needs at least 2).
        config: search settings.
        train_fn: optional ``f(model) -> accuracy`` that trains the winner (built with the same seeded weights)
            and returns its accuracy, recorded in ``best[0].accuracy``.
        progress: show a progress bar.

    Example:
        >>> batches = [(torch.randn(16, 1, 40), torch.randint(0, 10, (16,))) for _ in range(2)]
        >>> r = search_architectures("mnist1d_cnn", batches, SearchConfig(proxy="params", samples=8,
        ...                          budget_macs=50_000, method="random", top_k=2))
        >>> len(r.best), all(c.macs <= 50_000 for c in r.best)
        (2, True)
    """
    config = config or SearchConfig()
    space = get_space(space)
    g = torch.Generator().manual_seed(config.seed)
    x1 = torch.zeros(1, *space.input_shape)
    cache: dict[str, Candidate | None] = {}
    history: list[float] = []
    rejected = 0
    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.samples, desc=f"search ({config.proxy})", unit="arch")

    def evaluate(arch: Architecture) -> Candidate | None:
        nonlocal rejected
        code = arch.encode()
        if code in cache:
            return cache[code]
        torch.manual_seed(config.init_seed)
        model = space.build(arch)
        macs = count_macs(model, x1)
        cand = None
        if config.budget_macs is None or macs <= config.budget_macs:
            latency = None
            if config.budget_latency_ms is not None:
                latency = measure_latency(model.eval(), (x1,), threads=1, repeats=20, warmup=3).median_ms
            if latency is None or latency <= config.budget_latency_ms:
                score = score_model(model, batches, config.proxy)
                cand = Candidate(code, score if math.isfinite(score) else -math.inf, macs, count_params(model), latency)
        if cand is None:
            rejected += 1
        else:
            best = max([history[-1]] if history else [], default=-math.inf)
            history.append(max(best, cand.score))
            if bar is not None:
                bar.update()
        cache[code] = cand
        return cand

    cycles = 0

    def done() -> bool:
        # cycles also stop a converged evolution whose mutations only revisit architectures scored before
        return (
            len(history) >= config.samples
            or cycles >= 20 * config.samples
            or time.perf_counter() - started > config.time_limit_s
        )

    def fresh() -> Candidate | None:
        for _ in range(1000):  # rejection sampling into the budget
            cand = evaluate(space.sample(g))
            if cand is not None:
                return cand
            if done():
                return None
        raise ConfigError(
            f"no architecture of {space.name} fits the budget (budget_macs={config.budget_macs}, "
            f"budget_latency_ms={config.budget_latency_ms}) in 1000 samples; raise the budget"
        )

    try:
        if config.method == "random":
            while not done():
                fresh()
        else:
            population: collections.deque[Candidate] = collections.deque()
            while len(population) < config.population and not done():
                cand = fresh()
                if cand is not None:
                    population.append(cand)
            while not done() and population:
                cycles += 1
                picks = [population[int(i)] for i in torch.randperm(len(population), generator=g)[: config.tournament]]
                parent = max(picks, key=lambda c: c.score)
                child = None
                for _ in range(50):
                    child = evaluate(space.mutate(Architecture.decode(parent.arch), g))
                    if child is not None:
                        break
                if child is None:
                    child = fresh()
                if child is None:
                    break
                population.append(child)
                population.popleft()  # regularized evolution: the oldest dies, not the worst
    finally:
        if bar is not None:
            bar.close()
    found = sorted((c for c in cache.values() if c is not None), key=lambda c: -c.score)
    if not found:
        raise ConfigError("the search scored no architecture; raise time_limit_s or the budget")
    best = found[: config.top_k]
    seconds = time.perf_counter() - started
    log.info("search: %d scored, %d over budget, %.1f s; best %s", len(history), rejected, seconds, best[0].arch)
    if train_fn is not None:
        torch.manual_seed(config.init_seed)
        best[0].accuracy = float(train_fn(space.build(best[0].arch)))
    return SearchResult(best, len(history), rejected, seconds, config, history)
