"""Evaluation: NMSE per layer on held-out problems, side-by-side comparisons, and how many iterations a classical
algorithm needs to reach a learned solver's accuracy."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch

from effdl.core.errors import ConfigError
from effdl.core.table import format_table, human_count
from effdl.unroll.problem import Problem, check_measurements, nmse_db
from effdl.unroll.solvers import UnrolledSolver

__all__ = [
    "Comparison",
    "Curve",
    "Reach",
    "classical_reach",
    "compare_solvers",
    "iterations_to_reach",
    "nmse_curve",
    "tuned_parameters",
]


def tuned_parameters(solver: UnrolledSolver) -> int:
    """How many numbers were fitted to data: trainable tensors' entries, HyperLISTA's 3, none for ISTA/FISTA.

    Example:
        >>> from effdl.unroll import build_solver, make_problem
        >>> A = make_problem(m=20, n=40).A
        >>> tuned_parameters(build_solver("alista", A, 16)), tuned_parameters(build_solver("hyperlista", A, 16))
        (32, 3)
    """
    if hasattr(solver, "hyperparameters"):
        return len(solver.hyperparameters())
    return sum(p.numel() for p in solver.parameters() if p.requires_grad)


def nmse_curve(solver: UnrolledSolver, b: torch.Tensor, x: torch.Tensor, depth: int | None = None) -> list[float]:
    """NMSE in dB after each of the ``depth`` layers (iterations), computed without gradients.

    Example:
        >>> from effdl.unroll import build_solver, make_problem
        >>> p = make_problem(m=20, n=40)
        >>> b, x = p.sample(32, seed=0)
        >>> curve = nmse_curve(build_solver("ista", p.A, lam=0.01), b, x, 50)
        >>> len(curve), curve[-1] < curve[0]
        (50, True)
    """
    b = check_measurements(b, solver.m)
    if x.dim() != 2 or x.shape != (b.shape[0], solver.n):
        raise ConfigError(f"x must have shape ({b.shape[0]}, {solver.n}) to match b, got {tuple(x.shape)}")
    with torch.no_grad():
        return [nmse_db(xk, x) for xk in solver.steps(b, depth)]


def iterations_to_reach(
    solver: UnrolledSolver, b: torch.Tensor, x: torch.Tensor, target_db: float, max_iterations: int = 10_000
) -> int | None:
    """The first iteration at which ``solver``'s NMSE is at or below ``target_db``, or ``None`` within
    ``max_iterations``.

    Example:
        >>> from effdl.unroll import build_solver, make_problem
        >>> p = make_problem(m=20, n=40)
        >>> b, x = p.sample(32, seed=0)
        >>> iterations_to_reach(build_solver("fista", p.A, lam=0.01), b, x, -10.0) is not None
        True
    """
    b = check_measurements(b, solver.m)
    ref = x.double().pow(2).sum().item()
    with torch.no_grad():
        for k, xk in enumerate(solver.steps(b, max_iterations), start=1):
            err = (xk.double() - x.double()).pow(2).sum().item()
            if 10 * math.log10(max(err, 1e-300) / ref) <= target_db:
                return k
            if not math.isfinite(err):
                return None
    return None


@dataclasses.dataclass
class Curve:
    """One solver's NMSE per layer with its size and cost.

    Example:
        >>> Curve("ista", [-3.0, -5.0], params=0).final
        -5.0
    """

    name: str
    nmse_db: list[float]
    params: int
    train_seconds: float | None = None
    method: str = ""
    note: str = ""

    @property
    def final(self) -> float:
        """NMSE after the last layer."""
        return self.nmse_db[-1]

    def mean_drop(self, skip: int = 1) -> float:
        """Average NMSE decrease per layer after the first ``skip`` layers (dB/layer; linear convergence shows a
        steady drop)."""
        tail = self.nmse_db[skip:]
        if len(tail) < 2:
            return float("nan")
        return (tail[0] - tail[-1]) / (len(tail) - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return dataclasses.asdict(self) | {"final_nmse_db": self.final, "mean_drop_db_per_layer": self.mean_drop()}


@dataclasses.dataclass
class Comparison:
    """NMSE curves of several solvers on the same held-out problems.

    Example:
        >>> c = Comparison(curves=[Curve("ista", [-1.0, -2.0], 0), Curve("alista", [-5.0, -9.0], 32)], samples=8)
        >>> print(c.to_table())
        | solver | params | NMSE@1 (dB) | NMSE@2 (dB) | dB/layer | train (s) |
        |:-------|-------:|------------:|------------:|---------:|----------:|
        | ista   |      0 |        -1.0 |        -2.0 |        - |         - |
        | alista |     32 |        -5.0 |        -9.0 |        - |         - |
    """

    curves: list[Curve]
    samples: int
    problem: dict[str, Any] = dataclasses.field(default_factory=dict)

    def curve(self, name: str) -> Curve:
        """The curve of the solver called ``name``."""
        for c in self.curves:
            if c.name == name:
                return c
        raise ConfigError(
            f"no solver called {name!r} in this comparison; have {', '.join(c.name for c in self.curves)}"
        )

    def to_table(self, columns: Sequence[int] | None = None) -> str:
        """A table of NMSE at some layers (default: 1, 4, 8, 12, 16, or every layer up to 4), size and time."""
        depth = max(len(c.nmse_db) for c in self.curves)
        if columns is None:
            columns = list(range(1, depth + 1)) if depth <= 4 else sorted({1, *range(4, depth + 1, 4), depth})
        headers = ["solver", "params", *[f"NMSE@{k} (dB)" for k in columns], "dB/layer", "train (s)"]
        rows = []
        for c in self.curves:
            values = [f"{c.nmse_db[k - 1]:.1f}" if k <= len(c.nmse_db) else "" for k in columns]
            drop = c.mean_drop()
            rows.append(
                [
                    c.name,
                    human_count(c.params) if c.params >= 10_000 else str(c.params),
                    *values,
                    f"{drop:.2f}" if math.isfinite(drop) else "-",
                    f"{c.train_seconds:.0f}" if c.train_seconds is not None else "-",
                ]
            )
        return format_table(rows, headers, align="l" + "r" * (len(headers) - 1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {"samples": self.samples, "problem": self.problem, "curves": [c.to_dict() for c in self.curves]}

    def plot(self, path) -> Any:
        """Saves NMSE against layer for every solver to ``path``; returns the path."""
        from effdl.unroll.plots import plot_curves

        return plot_curves(self, path)


def compare_solvers(
    solvers: dict[str, UnrolledSolver],
    problem: Problem,
    *,
    samples: int = 1000,
    seed: int = 1_000_003,
    depth: int | None = None,
    train_seconds: dict[str, float] | None = None,
) -> Comparison:
    """NMSE per layer of every solver on the same ``samples`` held-out problems.

    Args:
        solvers: display name -> solver; all must use ``problem.A``.
        problem: the problem family.
        samples: held-out problems.
        seed: their seed (distinct from training seeds by default).
        depth: layers/iterations to run (default: each solver's own).
        train_seconds: training (or tuning) time per name, for the table.

    Example:
        >>> from effdl.unroll import build_solver, make_problem
        >>> p = make_problem(m=20, n=40)
        >>> c = compare_solvers({"ista": build_solver("ista", p.A, 8), "fista": build_solver("fista", p.A, 8)}, p,
        ...                     samples=64)
        >>> c.curve("fista").final < c.curve("ista").final
        True
    """
    if not solvers:
        raise ConfigError("compare_solvers needs at least one solver")
    for name, solver in solvers.items():
        if solver.A.shape != problem.A.shape or not torch.equal(solver.A, problem.A):
            raise ConfigError(
                f"solver {name!r} was built for another dictionary than the problem's; solvers can only be compared "
                "on their own problem (same m, n and dictionary seed)"
            )
    b, x = problem.sample(samples, seed=seed)
    train_seconds = train_seconds or {}
    curves = [
        Curve(
            name=name,
            nmse_db=nmse_curve(solver, b, x, depth),
            params=tuned_parameters(solver),
            train_seconds=train_seconds.get(name),
            method=solver.method,
        )
        for name, solver in solvers.items()
    ]
    return Comparison(curves=curves, samples=samples, problem=problem.spec.to_dict())


_PLATEAU = 1000


@dataclasses.dataclass
class Reach:
    """How many iterations a classical algorithm needs to reach a target NMSE (at its best LASSO weight).

    Example:
        >>> Reach("ista", "alista", -40.0, 900, 0.003).to_dict()["iterations"]
        900
    """

    algorithm: str
    target: str
    target_db: float
    iterations: int | None
    lam: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return dataclasses.asdict(self)


def classical_reach(
    problem: Problem,
    targets: dict[str, float],
    *,
    algorithms: Sequence[str] = ("ista", "fista"),
    lams: Sequence[float] = (0.1, 0.03, 0.01, 0.003, 0.001),
    max_iterations: int = 10_000,
    samples: int = 1000,
    seed: int = 1_000_003,
) -> tuple[list[Reach], dict[str, list[float]]]:
    """For every target NMSE, the fewest iterations of ISTA and FISTA that reach it, over a grid of LASSO
    weights (a small weight has a lower error floor, a large one converges faster: the best depends on the target).

    A run stops early once its NMSE has improved by less than 0.05 dB over 1000 iterations (the error floor of
    its LASSO weight). Returns the reaches and, per algorithm, the NMSE curve of the weight that reached the
    hardest target (or the lowest curve) for plotting.

    Example:
        >>> from effdl.unroll import make_problem
        >>> p = make_problem(m=20, n=40)
        >>> reaches, curves = classical_reach(p, {"easy": -5.0}, lams=(0.01,), max_iterations=200, samples=32)
        >>> [(r.algorithm, r.iterations is not None) for r in reaches]
        [('ista', True), ('fista', True)]
    """
    from effdl.unroll.checkpoint import build_solver

    if not targets:
        raise ConfigError("classical_reach needs at least one target NMSE")
    b, x = problem.sample(samples, seed=seed)
    ref = x.double().pow(2).sum().item()
    reaches: list[Reach] = []
    curves: dict[str, list[float]] = {}
    for algorithm in algorithms:
        best: dict[str, tuple[int, float]] = {}
        runs: dict[float, list[float]] = {}
        for lam in lams:
            solver = build_solver(algorithm, problem.A, 1, lam=lam)
            curve: list[float] = []
            pending = set(targets)
            with torch.no_grad():
                for xk in solver.steps(b, max_iterations):
                    err = (xk.double() - x.double()).pow(2).sum().item()
                    curve.append(10 * math.log10(max(err, 1e-300) / ref))
                    for name in [t for t in pending if curve[-1] <= targets[t]]:
                        pending.discard(name)
                        if name not in best or len(curve) < best[name][0]:
                            best[name] = (len(curve), lam)
                    if not pending or not math.isfinite(err):
                        break
                    # a run that has stalled above its targets (the LASSO's error floor) will not reach them
                    if len(curve) > _PLATEAU and curve[-_PLATEAU - 1] - curve[-1] < 0.05:
                        break
            runs[lam] = curve
        for name, level in targets.items():
            iterations, lam = best.get(name, (None, None))
            reaches.append(Reach(algorithm, name, level, iterations, lam))
        hardest = min(targets, key=targets.get)
        chosen = best[hardest][1] if hardest in best else min(runs, key=lambda lam: min(runs[lam]))
        curves[f"{algorithm} (lam={chosen:g})"] = runs[chosen]
    return reaches, curves
