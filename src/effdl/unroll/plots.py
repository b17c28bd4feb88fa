"""Plots of sparse-recovery accuracy (matplotlib, imported only when a plot is made)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from effdl.core.plot import saved_figure

if TYPE_CHECKING:
    from effdl.unroll.evaluate import Comparison

__all__ = ["plot_curves", "plot_long_run"]

_CLASSICAL = ("ista", "fista")


def plot_curves(comparison: Comparison, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """NMSE (dB) against layer for every solver of ``comparison``; classical algorithms dashed.

    Example:
        >>> import tempfile
        >>> from effdl.unroll.evaluate import Comparison, Curve
        >>> c = Comparison(curves=[Curve("ista", [-1.0, -2.0], 0, method="ista"), Curve("alista", [-5.0, -9.0], 32)],
        ...                samples=8)
        >>> plot_curves(c, f"{tempfile.mkdtemp()}/nmse.png").exists()
        True
    """
    path = Path(path)
    with saved_figure(path) as (_, ax):
        for curve in comparison.curves:
            layers = range(1, len(curve.nmse_db) + 1)
            style = "--" if curve.method in _CLASSICAL else "-"
            ax.plot(layers, curve.nmse_db, style, marker="o", markersize=3, label=f"{curve.name} ({curve.params:,})")
        ax.set_xlabel("layer / iteration k")
        ax.set_ylabel("NMSE (dB)")
        ax.grid(alpha=0.3)
        ax.legend(title="solver (tuned numbers)", fontsize=8)
        spec = comparison.problem
        ax.set_title(title or _title(spec, comparison.samples))
    return path


def _title(spec: Mapping, samples: int) -> str:
    if not spec:
        return f"sparse recovery, {samples} test problems"
    noise = "noiseless" if spec.get("snr_db") is None else f"SNR {spec['snr_db']:g} dB"
    cond = f", condition {spec['condition']:g}" if spec.get("condition") else ""
    return f"m={spec['m']}, n={spec['n']}, sparsity {spec['sparsity']:g}, {noise}{cond} ({samples} test problems)"


def plot_long_run(
    curves: Mapping[str, Sequence[float]],
    targets: Mapping[str, float],
    path: str | os.PathLike,
    *,
    title: str = "classical iterations vs learned layers",
) -> Path:
    """Classical algorithms over many iterations (log x axis) with the NMSE reached by learned solvers drawn as
    horizontal lines: where a curve crosses a line is the number of iterations that match that solver.

    Example:
        >>> import tempfile
        >>> p = plot_long_run({"ista": [-1.0, -2.0, -3.0]}, {"alista-16": -2.5}, f"{tempfile.mkdtemp()}/l.png")
        >>> p.exists()
        True
    """
    path = Path(path)
    with saved_figure(path) as (_, ax):
        for name, values in curves.items():
            ax.plot(range(1, len(values) + 1), values, label=name)
        for i, (name, level) in enumerate(targets.items()):
            ax.axhline(level, color=f"C{(i + len(curves)) % 10}", linestyle=":", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("NMSE (dB)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        ax.set_title(title)
    return path
