"""``landscape_report()``: the whole job behind ``effdl landscape`` — choose the directions (random, PCA of a
trajectory, or the line to a second model), compute the surface resumably, save the grid, the directions and the
plots, and report."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effdl.analysis import plots
from effdl.analysis.config import LandscapeConfig
from effdl.analysis.directions import Direction, random_directions, trajectory_directions
from effdl.analysis.sharpness import curve_curvature
from effdl.analysis.surface import Surface, interpolate_models, loss_surface
from effdl.core.checkpoint import load_checkpoint, save_checkpoint, tensors_digest
from effdl.core.errors import CheckpointError, ConfigError
from effdl.core.report import Report
from effdl.core.rundir import claim_run_dir, run_identity
from effdl.data.base import dataset_fingerprint

__all__ = ["landscape_report", "load_directions"]

log = logging.getLogger(__name__)


def _path_ranges(coords: torch.Tensor, margin: float = 0.2) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis ranges that hold the whole path and the final point (0, 0), with a margin on each side."""
    spans = []
    for axis in (coords[:, 0], coords[:, 1]):
        low, high = min(float(axis.min()), 0.0), max(float(axis.max()), 0.0)
        pad = margin * max(high - low, 1e-3)
        spans.append((low - pad, high + pad))
    return spans[0], spans[1]


def _save_directions(directions: Sequence[Direction], path: Path) -> None:
    tensors = {f"d{i}/{name}": t.contiguous() for i, d in enumerate(directions) for name, t in d.items()}
    save_checkpoint(path, tensors, meta={"kind": "landscape-directions", "count": len(directions)})


def load_directions(path: str | os.PathLike) -> list[Direction]:
    """Reads the ``directions.safetensors`` that :func:`landscape_report` writes (safely: tensors only), e.g. to
    compute a finer surface along the same directions with :func:`~effdl.analysis.loss_surface`.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "d.safetensors"
        >>> _save_directions([{"w": torch.ones(2)}], p)
        >>> load_directions(p)[0]["w"].tolist()
        [1.0, 1.0]
    """
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != "landscape-directions":
        raise CheckpointError(f"{path} holds no landscape directions (kind={meta.get('kind')!r})")
    directions: list[Direction] = [{} for _ in range(int(meta["count"]))]
    for key, t in tensors.items():
        index, _, name = key.partition("/")
        directions[int(index[1:])][name] = t
    return directions


def _plot(surface: Surface, out: Path, config: LandscapeConfig) -> dict[str, str]:
    artifacts = {}
    key = f"{config.splits[0]}/loss"
    if surface.dims == 1:
        title = "1D linear interpolation" if surface.kind == "interpolation" else f"{config.norm}-normalized direction"
        artifacts["plot"] = plots.plot_curve(surface, out / "landscape_1d.png", title=title).name
        return artifacts
    artifacts["contour"] = plots.plot_contour(surface, out / "contour.png", key=key).name
    artifacts["contour_filled"] = plots.plot_contour(surface, out / "contour_filled.png", key=key, filled=True).name
    artifacts["surface_3d"] = plots.plot_surface_3d(surface, out / "surface_3d.png", key=key).name
    ratio = f"{config.splits[0]}/eigen_ratio"
    if ratio in surface.values:
        artifacts["convexity"] = plots.plot_contour(
            surface, out / "convexity.png", key=ratio, filled=True, title="|lambda_min / lambda_max|"
        ).name
    return artifacts


def landscape_report(
    model: nn.Module,
    data: Any,
    config: LandscapeConfig | None = None,
    *,
    out_dir: str | os.PathLike,
    other: nn.Module | None = None,
    snapshots: Sequence[Mapping[str, torch.Tensor]] | None = None,
    resume: bool = False,
    plot: bool = True,
    loss_fn: Callable | None = None,
    model_name: str | None = None,
    dataset: str | None = None,
) -> tuple[Surface, Report]:
    """Computes a loss landscape of ``model`` and writes ``surface.npz``/``surface.json``, the directions
    (``directions.safetensors``), PNG plots and ``report.json`` into ``out_dir``.

    What is plotted depends on the arguments:

    - default: ``config.dims`` random directions (filter-normalized unless ``config.norm`` says otherwise);
    - ``other``: the 1D linear interpolation from ``model`` (0) to ``other`` (1);
    - ``snapshots``: the 2D surface over the two PCA directions of the optimization path, with the path drawn on
      it; the axis ranges cover the path unless ``config`` sets ranges other than the default.

    Returns:
        The :class:`Surface` and the :class:`~effdl.core.Report`; ``model`` is left bit-identical.

    Example:
        >>> import tempfile
        >>> net = nn.Linear(4, 3)
        >>> ds = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randint(0, 3, (16,)))
        >>> cfg = LandscapeConfig(dims=1, resolution=5, splits=("train",), progress=False)
        >>> s, r = landscape_report(net, {"train": ds}, cfg, out_dir=tempfile.mkdtemp(), plot=False)
        >>> sorted(r.artifacts)
        ['directions', 'surface_json', 'surface_npz']
    """
    config = config or LandscapeConfig()
    if other is not None and snapshots is not None:
        raise ConfigError("pass either other= (interpolation) or snapshots= (trajectory PCA), not both")
    identity = run_identity(
        config={k: v for k, v in config.to_dict().items() if k not in ("workers", "backend", "address", "progress")},
        model=tensors_digest(model.state_dict()),
        other=tensors_digest(other.state_dict()) if other is not None else None,
        snapshots=tensors_digest({f"{i}.{k}": v for i, s in enumerate(snapshots) for k, v in s.items()})
        if snapshots is not None else None,
        data=dataset_fingerprint(data),
    )  # fmt: skip
    with claim_run_dir(out_dir, command="landscape", identity=identity, resume=resume):
        return _landscape(model, data, config, Path(out_dir), other, snapshots, resume, plot, loss_fn, model_name,
                          dataset)  # fmt: skip


def _landscape(model, data, config, out, other, snapshots, resume, plot, loss_fn, model_name, dataset):
    started = time.perf_counter()
    artifacts: dict[str, str] = {}
    details: dict[str, Any] = {}
    if other is not None:
        if config.dims != 1:
            raise ConfigError(f"interpolation between two models is 1D; got dims={config.dims}, use --dims 1")
        surface = interpolate_models(model, other, data, config, out_dir=out, resume=resume, loss_fn=loss_fn)
    else:
        path = None
        if snapshots is not None:
            if config.dims != 2:
                raise ConfigError(f"a trajectory plot is 2D; got dims={config.dims}, use --dims 2")
            directions, coords, explained = trajectory_directions(model, snapshots, ignore=config.ignore)
            default = LandscapeConfig()
            if config.xrange == default.xrange and config.yrange == default.yrange:
                xr, yr = _path_ranges(coords)
                config = config.replace(xrange=xr, yrange=yr)
            details["explained_variance"] = explained
            path = coords.numpy()
        else:
            directions = random_directions(
                model,
                config.dims,
                norm=config.norm,
                ignore=config.ignore,
                orthogonal=config.orthogonal,
                seed=config.seed,
            )
        _save_directions(directions, out / "directions.safetensors")
        artifacts["directions"] = "directions.safetensors"
        surface = loss_surface(model, data, config, directions=directions, out_dir=out, resume=resume, loss_fn=loss_fn)
        surface.path = path
        surface.info.update(details)
    details["seconds"] = time.perf_counter() - started
    details["points"] = int(np.prod([len(a) for a in surface.axes]))
    origin = surface.origin()
    for key, grid in surface.values.items():
        finite = grid[np.isfinite(grid)]
        details[key] = {
            "at_origin": None if origin is None else float(grid[origin]),
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
        }
    if surface.dims == 1 and surface.kind == "directions":
        span = config.xrange[1] - config.xrange[0]
        radius = max(span / 8, 1.001 * span / (config.resolution - 1))  # at least the neighbours of 0
        details["curvature_radius"] = radius
        for split in config.splits:
            try:
                c = curve_curvature(surface, f"{split}/loss", radius=radius)
            except ConfigError:
                continue
            details[f"{split}/curvature"] = c if math.isfinite(c) else None
    files = surface.save(out)
    artifacts.update(surface_npz=files["npz"].name, surface_json=files["json"].name)
    if plot:
        artifacts.update(_plot(surface, out, config))
    report = Report(
        command="landscape",
        model=model_name,
        dataset=dataset,
        config={**config.to_dict(), "mode": surface.kind if snapshots is None else "trajectory"},
        details=details,
        artifacts=artifacts,
    )
    report.write(out)
    log.info("landscape: %d points in %.1f s -> %s", details["points"], details["seconds"], out)
    return surface, report
