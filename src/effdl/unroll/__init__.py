"""Unrolled sparse solvers: ISTA and FISTA, and the networks unrolled from them (LISTA, LISTA-CP, LISTA-CPSS,
ALISTA, HyperLISTA), with a problem generator, layer-wise or joint training, HyperLISTA tuning and NMSE evaluation.

Example:
    >>> import torch
    >>> from effdl.unroll import build_solver, make_problem, nmse_db
    >>> p = make_problem(m=20, n=40)
    >>> b, x = p.sample(8, seed=0)
    >>> fista = build_solver("fista", p.A, 16, lam=0.05)
    >>> nmse_db(fista(b), x) < 0
    True
"""

from effdl.unroll.alista import ALISTA, HyperLISTA
from effdl.unroll.checkpoint import build_solver, load_solver, save_solver
from effdl.unroll.coherence import analytic_weight, mutual_coherence
from effdl.unroll.evaluate import Comparison, Curve, classical_reach, compare_solvers, nmse_curve
from effdl.unroll.hyper import HyperTuneConfig, TuneResult, tune_hyperlista
from effdl.unroll.lista import LISTA, LISTACP, LISTACPSS
from effdl.unroll.problem import Problem, SparseProblem, gaussian_dictionary, make_problem, nmse_db
from effdl.unroll.shrink import soft_threshold, support_schedule, support_select
from effdl.unroll.solvers import FISTA, ISTA, SOLVERS, UnrolledSolver
from effdl.unroll.train import TrainResult, UnrollTrainConfig, train_solver

__all__ = [
    "ALISTA",
    "FISTA",
    "ISTA",
    "LISTA",
    "LISTACP",
    "LISTACPSS",
    "SOLVERS",
    "Comparison",
    "Curve",
    "HyperLISTA",
    "HyperTuneConfig",
    "Problem",
    "SparseProblem",
    "TrainResult",
    "TuneResult",
    "UnrollTrainConfig",
    "UnrolledSolver",
    "analytic_weight",
    "build_solver",
    "classical_reach",
    "compare_solvers",
    "gaussian_dictionary",
    "load_solver",
    "make_problem",
    "mutual_coherence",
    "nmse_curve",
    "nmse_db",
    "save_solver",
    "soft_threshold",
    "support_schedule",
    "support_select",
    "train_solver",
    "tune_hyperlista",
]
