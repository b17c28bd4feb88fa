"""Tuning HyperLISTA's three hyperparameters without back-propagation: a coarse-to-fine grid or Bayesian
optimization (a Gaussian process with expected improvement), both on the final layer's NMSE on training problems.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
import warnings
from typing import Any

import numpy as np
import torch

from effdl.core.config import Config, check_choice, check_range
from effdl.core.errors import ConfigError
from effdl.unroll.alista import HyperLISTA
from effdl.unroll.problem import Problem, nmse_db

__all__ = ["HyperTuneConfig", "TuneResult", "tune_hyperlista"]

log = logging.getLogger(__name__)

NAMES = ("c1", "c2", "c3")


@dataclasses.dataclass(frozen=True, kw_only=True)
class HyperTuneConfig(Config):
    """How to tune HyperLISTA.

    Args:
        method: ``grid`` (coarse-to-fine, log-spaced) or ``bayes`` (Gaussian-process expected improvement).
        samples: problems the objective is measured on.
        seed: seed of those problems (and of the Bayesian search).
        bounds: ``(low, high)`` of c1, c2 and c3, searched on a log scale.
        points: grid points per hyperparameter and round.
        rounds: grid rounds; each zooms in around the best point so far.
        evaluations: Bayesian search: objective evaluations in all (the first ``initial`` at random).
        initial: Bayesian search: random evaluations before the Gaussian process takes over.
        progress: show a progress bar.

    Example:
        >>> HyperTuneConfig(method="bayes").evaluations
        60
        >>> HyperTuneConfig(bounds=((1.0, 0.1), (0.01, 1), (0.01, 1)))
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: bounds of c1 must satisfy 0 < low < high, got (1.0, 0.1); ...
    """

    method: str = "grid"
    samples: int = 500
    seed: int = 0
    bounds: tuple[tuple[float, float], ...] = ((1e-3, 1.0), (1e-3, 0.3), (1e-3, 3.0))
    points: int = 6
    rounds: int = 3
    evaluations: int = 60
    initial: int = 12
    progress: bool = True

    def validate(self) -> None:
        check_choice("method", self.method, ("grid", "bayes"))
        for name in ("samples", "points", "rounds", "evaluations", "initial"):
            check_range(name, getattr(self, name), 1)
        check_range("points", self.points, 2, hint="use points=6")
        if len(self.bounds) != 3:
            raise ConfigError(f"bounds must give (low, high) for c1, c2 and c3, got {len(self.bounds)} pairs")
        for name, pair in zip(NAMES, self.bounds, strict=True):
            if len(pair) != 2 or not 0 < pair[0] < pair[1]:
                raise ConfigError(
                    f"bounds of {name} must satisfy 0 < low < high, got {tuple(pair)}; use e.g. (0.001, 1.0)"
                )


@dataclasses.dataclass
class TuneResult:
    """The best hyperparameters found and every trial.

    Example:
        >>> r = TuneResult(best={"c1": 0.1, "c2": 0.02, "c3": 0.3}, nmse_db=-60.0, trials=[], seconds=1.0)
        >>> r.to_dict()["best"]["c2"]
        0.02
    """

    best: dict[str, float]
    nmse_db: float
    trials: list[dict[str, float]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {"best": self.best, "nmse_db": self.nmse_db, "seconds": self.seconds, "trials": self.trials}


def _objective(solver: HyperLISTA, b: torch.Tensor, x: torch.Tensor, c: tuple[float, float, float]) -> float:
    solver.c1, solver.c2, solver.c3 = c
    with torch.no_grad():
        value = nmse_db(solver(b), x)
    return value if math.isfinite(value) else float("inf")


def tune_hyperlista(solver: HyperLISTA, problem: Problem, config: HyperTuneConfig | None = None) -> TuneResult:
    """Finds c1, c2, c3 minimizing the final NMSE on ``config.samples`` problems and sets them on ``solver``.

    Example:
        >>> from effdl.unroll import build_solver, make_problem
        >>> p = make_problem(m=20, n=40)
        >>> net = build_solver("hyperlista", p.A, 6)
        >>> r = tune_hyperlista(net, p, HyperTuneConfig(samples=16, points=2, rounds=1, progress=False))
        >>> len(r.trials), net.hyperparameters() == r.best
        (8, True)
    """
    config = config or HyperTuneConfig()
    if not isinstance(solver, HyperLISTA):
        raise ConfigError(f"tune_hyperlista tunes a HyperLISTA solver, got {type(solver).__name__}")
    if solver.A.shape != problem.A.shape or not torch.equal(solver.A, problem.A):
        raise ConfigError("the solver was built for another dictionary than the problem's; build it from problem.A")
    b, x = problem.sample(config.samples, seed=config.seed + 7_919)
    began = time.perf_counter()
    trials: list[dict[str, float]] = []

    def evaluate(c: tuple[float, float, float]) -> float:
        value = _objective(solver, b, x, c)
        trials.append({**dict(zip(NAMES, c, strict=True)), "nmse_db": value})
        return value

    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        total = config.points**3 * config.rounds if config.method == "grid" else config.evaluations
        bar = tqdm(total=total, desc=f"tune hyperlista ({config.method})", unit="trial")
    if config.method == "grid":
        _grid(evaluate, config, bar)
    else:
        _bayes(evaluate, config, bar)
    if bar is not None:
        bar.close()
    best = min(trials, key=lambda t: t["nmse_db"])
    solver.c1, solver.c2, solver.c3 = (best[k] for k in NAMES)
    log.info("hyperlista tuned: %s -> %.2f dB (%d trials)", solver.hyperparameters(), best["nmse_db"], len(trials))
    return TuneResult(
        best=solver.hyperparameters(), nmse_db=best["nmse_db"], trials=trials, seconds=time.perf_counter() - began
    )


def _grid(evaluate, config: HyperTuneConfig, bar) -> None:
    low = np.log10([lo for lo, _ in config.bounds])
    high = np.log10([hi for _, hi in config.bounds])
    best_value, best_point = float("inf"), (low + high) / 2
    for _ in range(config.rounds):
        axes = [np.linspace(lo, hi, config.points) for lo, hi in zip(low, high, strict=True)]
        for point in itertools.product(*axes):
            value = evaluate(tuple(float(10**v) for v in point))
            if value < best_value:
                best_value, best_point = value, np.array(point)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"best {best_value:.1f} dB", refresh=False)
        # zoom: one grid step either side of the best point (in log10 units)
        step = (high - low) / (config.points - 1)
        low, high = best_point - step, best_point + step


def _bayes(evaluate, config: HyperTuneConfig, bar) -> None:
    from scipy.stats import norm
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    rng = np.random.default_rng(config.seed)
    low = np.log10([lo for lo, _ in config.bounds])
    high = np.log10([hi for _, hi in config.bounds])
    points: list[np.ndarray] = []
    values: list[float] = []
    for i in range(config.evaluations):
        if i < config.initial:
            point = rng.uniform(low, high)
        else:
            unit = (np.array(points) - low) / (high - low)
            finite = np.array(values)
            finite = np.where(np.isfinite(finite), finite, np.nanmax(finite[np.isfinite(finite)], initial=0.0) + 10)
            kernel = ConstantKernel(1.0) * Matern(length_scale=[0.3] * 3, nu=2.5) + WhiteKernel(
                1e-3, noise_level_bounds=(1e-9, 1.0)
            )
            gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=config.seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # a length scale at its bound is harmless here
                gp.fit(unit, finite)
            candidates = rng.uniform(0, 1, size=(4096, 3))
            mean, std = gp.predict(candidates, return_std=True)
            best = finite.min()
            z = (best - mean) / np.maximum(std, 1e-9)
            improvement = (best - mean) * norm.cdf(z) + std * norm.pdf(z)  # expected improvement (minimizing)
            point = low + candidates[int(np.argmax(improvement))] * (high - low)
        points.append(point)
        values.append(evaluate(tuple(float(10**v) for v in point)))
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"best {min(values):.1f} dB", refresh=False)
