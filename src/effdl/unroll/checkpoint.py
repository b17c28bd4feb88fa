"""Building solvers by name, and saving and loading them as safe checkpoints that carry their dictionary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from effdl.core.checkpoint import load_checkpoint, save_checkpoint
from effdl.core.config import check_options
from effdl.core.errors import CheckpointError, ConfigError
from effdl.unroll import alista as _alista  # noqa: F401  (registers its solvers)
from effdl.unroll import lista as _lista  # noqa: F401
from effdl.unroll.problem import Problem, SparseProblem
from effdl.unroll.solvers import SOLVERS, UnrolledSolver

__all__ = ["build_solver", "load_solver", "save_solver"]

KIND = "effdl.unroll.solver"


def build_solver(method: str, A: torch.Tensor, layers: int = 16, **options: Any) -> UnrolledSolver:
    """A solver from the registry ``SOLVERS`` by name, for dictionary ``A``.

    Example:
        >>> from effdl.unroll.problem import make_problem
        >>> build_solver("lista-cpss", make_problem(m=20, n=40).A, 4).method
        'lista-cpss'
        >>> build_solver("alista", make_problem(m=20, n=40).A, 4, step=1)
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: alista got unknown option(s) 'step'; valid options: W, gamma, theta, ...
    """
    cls = SOLVERS.get(method)
    check_options(cls.method or str(method), cls.__init__, options, reserved=("self", "A", "layers"))
    return cls(A, layers, **options)


def save_solver(
    solver: UnrolledSolver, path: str | os.PathLike, *, problem: Problem | None = None, **meta: Any
) -> Path:
    """Writes ``solver`` (its ``A``, weights and options) to a ``.safetensors`` checkpoint, atomically.

    Args:
        solver: the solver.
        path: the file to write.
        problem: the problem it was trained for, recorded so that evaluation regenerates matching samples.
        meta: more JSON-able metadata (training time, history, ...).

    Example:
        >>> import tempfile, pathlib
        >>> from effdl.unroll.problem import make_problem
        >>> p = make_problem(m=20, n=40)
        >>> path = save_solver(build_solver("alista", p.A, 3), pathlib.Path(tempfile.mkdtemp()) / "s.safetensors")
        >>> load_solver(path).method, load_solver(path).num_layers
        ('alista', 3)
    """
    info = {
        "kind": KIND,
        "method": solver.method,
        "layers": solver.num_layers,
        "options": solver.options(),
        "problem": (problem.spec if problem is not None else SparseProblem(m=solver.m, n=solver.n)).to_dict(),
        **meta,
    }
    return save_checkpoint(path, dict(solver.state_dict()), info)


#: the deepest solver a checkpoint may ask for (unrolled solvers have tens of layers; a bound keeps a small file
#: from asking for gigabytes)
MAX_LAYERS = 4096


def load_solver(path: str | os.PathLike) -> UnrolledSolver:
    """Rebuilds a solver saved by :func:`save_solver`; the problem spec is in ``solver.problem_spec``.

    Raises:
        CheckpointError: the file is not a solver checkpoint, or its tensors do not fit its method.
    """
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != KIND:
        raise CheckpointError(
            f"{path} is not an effdl.unroll solver checkpoint (kind={meta.get('kind')!r}); "
            "write one with `effdl unroll train` or effdl.unroll.save_solver"
        )
    if "A" not in tensors:
        raise CheckpointError(f"{path} has no dictionary tensor 'A'; it is incomplete")
    options = dict(meta.get("options", {}))
    if "W" in tensors and meta["method"] in ("alista", "hyperlista"):
        options["W"] = tensors["W"]
    layers = meta.get("layers")
    if not isinstance(layers, int) or isinstance(layers, bool) or not 1 <= layers <= MAX_LAYERS:
        raise CheckpointError(
            f"{path} records layers={layers!r}; a solver checkpoint holds 1 to {MAX_LAYERS} layers: the file is "
            "corrupt or not from effdl"
        )
    try:
        solver = build_solver(meta["method"], tensors["A"], layers, **options)
        solver.load_state_dict(tensors, strict=True)
    except (RuntimeError, ConfigError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} does not rebuild a {meta.get('method')} solver: {exc}") from exc
    solver.problem_spec = SparseProblem.from_dict(meta["problem"]) if "problem" in meta else None
    solver.checkpoint_meta = meta
    return solver
