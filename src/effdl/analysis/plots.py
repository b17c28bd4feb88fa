"""Plots of loss surfaces (matplotlib, imported only when a plot is made): 1D curves with loss and accuracy,
several curves compared, 2D contour and filled-contour maps with an optional optimization-path overlay, and 3D
surfaces, each saved as PNG."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from effdl.analysis.surface import Surface
from effdl.core.errors import ConfigError
from effdl.core.plot import saved_figure

__all__ = ["plot_contour", "plot_curve", "plot_curves", "plot_surface_3d"]


def _xlabel(surface: Surface) -> str:
    return "interpolation coefficient alpha" if surface.kind == "interpolation" else "direction 1"


def _key(surface: Surface, key: str) -> np.ndarray:
    if key not in surface.values:
        raise ConfigError(f"the surface has no {key!r}; it has {sorted(surface.values)}")
    return surface.values[key]


def plot_curve(surface: Surface, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """A 1D surface: loss (solid, left axis, log scale) and accuracy (dashed, right axis) of every split.

    Example:
        >>> import tempfile
        >>> x = np.linspace(-1, 1, 5)
        >>> s = Surface([x], {"train/loss": x**2 + 0.1, "train/accuracy": 1 - x**2 / 2})
        >>> plot_curve(s, f"{tempfile.mkdtemp()}/c.png").exists()
        True
    """
    if surface.dims != 1:
        raise ConfigError(f"plot_curve needs a 1D surface, got {surface.dims}D; use plot_contour")
    x = surface.axes[0]
    splits = sorted({k.split("/")[0] for k in surface.values})
    with saved_figure(path) as (_fig, ax):
        acc_ax = ax.twinx()
        for i, split in enumerate(splits):
            color = f"C{i}"
            if f"{split}/loss" in surface.values:
                ax.plot(x, surface.values[f"{split}/loss"], color=color, label=f"{split} loss")
            acc = surface.values.get(f"{split}/accuracy")
            if acc is not None and not np.all(np.isnan(acc)):
                acc_ax.plot(x, 100 * acc, color=color, linestyle="--", label=f"{split} accuracy")
        ax.set_yscale("log")
        ax.set_xlabel(_xlabel(surface))
        ax.set_ylabel("loss (log scale)")
        acc_ax.set_ylabel("accuracy (%)")
        acc_ax.set_ylim(0, 100)
        lines = ax.get_legend_handles_labels()
        more = acc_ax.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], loc="best", fontsize=7, framealpha=0.6)
        ax.set_title(title or "loss along a filter-normalized direction")
    return Path(path)


def plot_curves(
    surfaces: Mapping[str, Surface], path: str | os.PathLike, *, key: str = "train/loss", title: str | None = None
) -> Path:
    """Several 1D surfaces of one metric overlaid (e.g. small- vs large-batch models), one line per label.

    Example:
        >>> import tempfile
        >>> x = np.linspace(-1, 1, 5)
        >>> a, b = Surface([x], {"train/loss": x**2}), Surface([x], {"train/loss": 3 * x**2})
        >>> plot_curves({"flat": a, "sharp": b}, f"{tempfile.mkdtemp()}/c.png").exists()
        True
    """
    if not surfaces:
        raise ConfigError("plot_curves needs at least one surface")
    with saved_figure(path) as (_fig, ax):
        for label, s in surfaces.items():
            ax.plot(s.axes[0], _key(s, key), label=label)
        ax.set_xlabel(_xlabel(next(iter(surfaces.values()))))
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
        ax.set_title(title or key)
    return Path(path)


def _levels(z: np.ndarray, levels: int) -> np.ndarray:
    """Contour levels from the minimum up to the 90th percentile: a sharp rim would otherwise swallow every level."""
    finite = z[np.isfinite(z)]
    if finite.size == 0:
        raise ConfigError("the surface holds no finite values to draw")
    low, high = float(finite.min()), float(np.percentile(finite, 90))
    return np.linspace(low, high if high > low else low + 1e-6, levels)


def plot_contour(
    surface: Surface,
    path: str | os.PathLike,
    *,
    key: str = "train/loss",
    filled: bool = False,
    levels: int = 30,
    title: str | None = None,
) -> Path:
    """A 2D surface as contour lines (``filled=False``) or a filled contour map, with the optimization path drawn
    on top when the surface has one (PCA trajectory plots).

    Example:
        >>> import tempfile
        >>> x = np.linspace(-1, 1, 5); z = x[:, None] ** 2 + x[None, :] ** 2
        >>> plot_contour(Surface([x, x], {"train/loss": z}), f"{tempfile.mkdtemp()}/c.png").exists()
        True
    """
    if surface.dims != 2:
        raise ConfigError(f"plot_contour needs a 2D surface, got {surface.dims}D; use plot_curve")
    z = _key(surface, key)
    xx, yy = np.meshgrid(surface.axes[0], surface.axes[1], indexing="ij")
    with saved_figure(path, size=(6, 5)) as (fig, ax):
        if filled:
            mappable = ax.contourf(xx, yy, z, levels=_levels(z, levels), cmap="viridis", extend="max")
        else:
            mappable = ax.contour(xx, yy, z, levels=_levels(z, levels), cmap="viridis")
            ax.clabel(mappable, inline=True, fontsize=6, fmt="%.2f")
        fig.colorbar(mappable, ax=ax, label=key)
        if surface.path is not None:
            ax.plot(surface.path[:, 0], surface.path[:, 1], "r.-", markersize=4, label="optimization path")
            ax.legend(fontsize=8)
        explained = surface.info.get("explained_variance")
        if explained:
            ax.set_xlabel(f"PC 1 ({100 * explained[0]:.1f}% of the path's variance)")
            ax.set_ylabel(f"PC 2 ({100 * explained[1]:.1f}%)")
        else:
            ax.set_xlabel("direction 1")
            ax.set_ylabel("direction 2")
        ax.set_title(title or key)
    return Path(path)


def plot_surface_3d(
    surface: Surface, path: str | os.PathLike, *, key: str = "train/loss", title: str | None = None
) -> Path:
    """A 2D surface drawn in 3D (values above the 90th percentile clipped so the basin stays visible).

    Example:
        >>> import tempfile
        >>> x = np.linspace(-1, 1, 5); z = x[:, None] ** 2 + x[None, :] ** 2
        >>> plot_surface_3d(Surface([x, x], {"train/loss": z}), f"{tempfile.mkdtemp()}/c.png").exists()
        True
    """
    if surface.dims != 2:
        raise ConfigError(f"plot_surface_3d needs a 2D surface, got {surface.dims}D; use plot_curve")
    z = _key(surface, key)
    top = _levels(z, 2)[-1]
    xx, yy = np.meshgrid(surface.axes[0], surface.axes[1], indexing="ij")
    with saved_figure(path, size=(7, 5.5), subplot_kw={"projection": "3d"}) as (_fig, ax):
        ax.plot_surface(xx, yy, np.minimum(z, top), cmap="viridis", linewidth=0, antialiased=True)
        ax.set_xlabel("direction 1")
        ax.set_ylabel("direction 2")
        ax.set_zlabel(key)
        ax.set_title(title or key)
    return Path(path)
