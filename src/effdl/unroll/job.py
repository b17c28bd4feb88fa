"""The jobs behind ``effdl unroll train`` and ``effdl unroll eval``: train or tune several solvers on one problem,
compare them with ISTA and FISTA on held-out problems, and write ``report.json``, models and plots."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from effdl.core.errors import CheckpointError, ConfigError
from effdl.core.report import Report
from effdl.core.rundir import claim_run_dir, run_identity
from effdl.unroll.checkpoint import build_solver, load_solver, save_solver
from effdl.unroll.evaluate import Comparison, classical_reach, compare_solvers
from effdl.unroll.hyper import HyperTuneConfig, tune_hyperlista
from effdl.unroll.plots import plot_long_run
from effdl.unroll.problem import Problem, SparseProblem
from effdl.unroll.solvers import UnrolledSolver
from effdl.unroll.train import UnrollTrainConfig, train_solver

__all__ = ["LEARNED", "eval_report", "fit_solver", "parse_methods", "train_report"]

log = logging.getLogger(__name__)

LEARNED = ("lista", "lista-cp", "lista-cpss", "alista", "hyperlista")
CLASSICAL = ("ista", "fista")
MODEL_FILE = "model.safetensors"


def parse_methods(text: str | Sequence[str], allowed: Sequence[str]) -> list[str]:
    """Splits ``"a,b"`` (or ``"all"``) into method names, checking each against ``allowed``.

    Example:
        >>> parse_methods("alista, lista-cp", LEARNED)
        ['alista', 'lista-cp']
        >>> parse_methods("lista-ss", LEARNED)
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: unknown method 'lista-ss'; choose from lista, lista-cp, ...
    """
    names = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    if names == ["all"]:
        return list(allowed)
    if not names:
        raise ConfigError(f"no method given; choose from {', '.join(allowed)} (or all)")
    for name in names:
        if name not in allowed:
            raise ConfigError(f"unknown method {name!r}; choose from {', '.join(allowed)} (or all)")
    return list(dict.fromkeys(names))


def fit_solver(
    method: str,
    problem: Problem,
    layers: int,
    train: UnrollTrainConfig,
    tune: HyperTuneConfig,
    out: str | os.PathLike,
    resume: bool = False,
) -> tuple[UnrolledSolver, dict[str, Any]]:
    """Builds ``method`` for ``problem`` and trains it (or tunes it, for HyperLISTA); saves it to
    ``OUT/model.safetensors`` and returns it with a record of the fit (``seconds``, stages or trials).

    With ``resume``, a model already saved in ``out`` is loaded instead, and an interrupted training continues.
    """
    out = Path(out)
    model_path = out / MODEL_FILE
    if resume and model_path.exists():
        solver = load_solver(model_path)
        if solver.method != method or not torch.equal(solver.A, problem.A) or solver.num_layers != layers:
            raise CheckpointError(
                f"{model_path} holds a {solver.num_layers}-layer {solver.method} solver, not the {layers}-layer "
                f"{method} asked for, or was trained on another problem; use a fresh --out or the same settings"
            )
        fit = dict(solver.checkpoint_meta.get("fit", {}))
        wanted = (tune if method == "hyperlista" else train).to_dict()
        saved = fit.get("config", {})
        changed = sorted(k for k in wanted if k != "progress" and saved.get(k) != wanted[k])
        if changed:
            raise CheckpointError(
                f"{model_path} was fitted with other settings ({', '.join(changed)} differ); use a fresh --out "
                "or the same settings"
            )
        log.info("%s: already trained, loaded %s", method, model_path)
        return solver, fit
    solver = build_solver(method, problem.A, layers)
    if method == "hyperlista":
        result = tune_hyperlista(solver, problem, tune)
        fit = {"kind": "tune", "seconds": result.seconds, "config": tune.to_dict(), **result.to_dict()}
    else:
        result = train_solver(solver, problem, train, out_dir=out, resume=resume)
        fit = {"kind": "train", "config": train.to_dict(), **result.to_dict()}
    save_solver(solver, model_path, problem=problem, fit=fit)
    return solver, fit


def train_report(
    methods: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    problem: SparseProblem | None = None,
    layers: int = 16,
    train: UnrollTrainConfig | None = None,
    tune: HyperTuneConfig | None = None,
    lam: float = 0.1,
    test_samples: int = 1000,
    resume: bool = False,
) -> tuple[Report, Comparison]:
    """Trains (or tunes) each of ``methods`` into ``OUT/METHOD/model.safetensors`` and compares them with ISTA and
    FISTA at the same depth; writes ``OUT/report.json`` and ``OUT/nmse.png``.

    With ``resume``, methods whose model is already saved are loaded, and an interrupted training continues from
    its last checkpoint.
    """
    spec = problem or SparseProblem()
    train = train or UnrollTrainConfig()
    tune = tune or HyperTuneConfig()
    identity = run_identity(problem=spec.to_dict(), layers=layers,
                            train={k: v for k, v in train.to_dict().items() if k != "progress"},
                            tune={k: v for k, v in tune.to_dict().items() if k != "progress"}, lam=lam,
                            test_samples=test_samples)  # fmt: skip
    with claim_run_dir(out_dir, command="unroll", identity=identity, resume=resume):
        return _train_report(methods, Path(out_dir), spec, layers, train, tune, lam, test_samples, resume)


def _train_report(methods, out, spec, layers, train, tune, lam, test_samples, resume) -> tuple[Report, Comparison]:
    prob = Problem(spec)
    solvers: dict[str, UnrolledSolver] = {
        "ista": build_solver("ista", prob.A, layers, lam=lam),
        "fista": build_solver("fista", prob.A, layers, lam=lam),
    }
    fits: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for method in methods:
        if method in CLASSICAL:
            continue
        began = time.perf_counter()
        solver, fit = fit_solver(method, prob, layers, train, tune, out / method, resume)
        solvers[method], fits[method] = solver, fit
        seconds[method] = float(fit.get("seconds", time.perf_counter() - began))
    comparison = compare_solvers(solvers, prob, samples=test_samples, train_seconds=seconds)
    plot = comparison.plot(out / "nmse.png")
    report = Report(
        command="unroll train",
        dataset="sparse-recovery",
        config={
            "problem": spec.to_dict(),
            "layers": layers,
            "lam": lam,
            "train": train.to_dict(),
            "tune": tune.to_dict(),
        },
        details={
            "comparison": comparison.to_dict(),
            "fit": {m: {k: v for k, v in f.items() if k != "trials"} for m, f in fits.items()},
        },
        artifacts={"nmse_plot": plot.name, **{m: f"{m}/{MODEL_FILE}" for m in fits}},
    )
    report.write(out)
    return report, comparison


def _checkpoints(paths: Sequence[str | os.PathLike], runs: str | os.PathLike | None) -> list[Path]:
    found = [Path(p) for p in paths]
    if runs is not None:
        found += sorted(Path(runs).glob(f"*/{MODEL_FILE}"))
        if not found:
            raise ConfigError(f"no */{MODEL_FILE} under {runs}; train some with `effdl unroll train --out {runs}`")
    return found


def eval_report(
    out_dir: str | os.PathLike | None,
    *,
    checkpoints: Sequence[str | os.PathLike] = (),
    runs: str | os.PathLike | None = None,
    methods: Sequence[str] = CLASSICAL,
    problem: SparseProblem | None = None,
    layers: int | None = None,
    lam: float = 0.1,
    samples: int = 1000,
    reach: bool = False,
    reach_lams: Sequence[float] = (0.1, 0.03, 0.01, 0.003, 0.001),
    reach_max: int = 10_000,
) -> tuple[Report, Comparison]:
    """Compares saved solvers (``checkpoints`` and every ``RUNS/*/model.safetensors``) with classical ``methods`` on
    held-out problems of the solvers' own problem family; with ``reach``, also counts the ISTA and FISTA
    iterations (best LASSO weight of ``reach_lams``) that reach each learned solver's final NMSE. ``layers`` is
    the classical algorithms' iteration count (default: the deepest solver's layers, else 16).
    """
    loaded: dict[str, UnrolledSolver] = {}
    spec = problem
    prob: Problem | None = None
    for path in _checkpoints(checkpoints, runs):
        solver = load_solver(path)
        name = solver.method if solver.method not in loaded else f"{solver.method} ({path.parent.name})"
        if prob is None:
            spec = solver.problem_spec or SparseProblem(m=solver.m, n=solver.n)
            prob = Problem(spec)
            if not torch.equal(prob.A, solver.A):
                prob = Problem(spec, A=solver.A)  # a dictionary that the spec does not regenerate
        elif not torch.equal(prob.A, solver.A):
            raise ConfigError(
                f"{path} was trained on another dictionary than the other checkpoints; compare solvers of one "
                "problem at a time"
            )
        loaded[name] = solver
    if prob is None:
        spec = spec or SparseProblem()
        prob = Problem(spec)
    if layers is None:  # classical algorithms run as deep as the deepest learned solver
        layers = max((s.num_layers for s in loaded.values()), default=16)
    solvers = {m: build_solver(m, prob.A, layers, lam=lam) for m in methods}
    solvers.update(loaded)
    seconds = {
        name: float(s.checkpoint_meta.get("fit", {}).get("seconds"))
        for name, s in loaded.items()
        if s.checkpoint_meta.get("fit", {}).get("seconds") is not None
    }
    comparison = compare_solvers(solvers, prob, samples=samples, train_seconds=seconds)
    details: dict[str, Any] = {"comparison": comparison.to_dict()}
    artifacts: dict[str, str] = {}
    if out_dir is not None:
        out = Path(out_dir)
        artifacts["nmse_plot"] = comparison.plot(out / "nmse.png").name
    if reach:
        targets = {f"{n}-{len(c.nmse_db)}": c.final for n, c in ((c.name, c) for c in comparison.curves) if n in loaded}
        if not targets:
            raise ConfigError("--reach compares classical iterations with learned solvers; pass --checkpoint or --runs")
        reaches, curves = classical_reach(prob, targets, lams=reach_lams, max_iterations=reach_max, samples=samples)
        details["reach"] = {"lams": list(reach_lams), "max_iterations": reach_max,
                            "results": [r.to_dict() for r in reaches]}  # fmt: skip
        if out_dir is not None:
            artifacts["reach_plot"] = plot_long_run(curves, targets, Path(out_dir) / "iterations.png").name
    report = Report(
        command="unroll eval",
        dataset="sparse-recovery",
        config={"problem": spec.to_dict() if spec else None, "layers": layers, "lam": lam, "samples": samples},
        details=details,
        artifacts=artifacts,
    )
    if out_dir is not None:
        report.write(out_dir)
    return report, comparison
