"""Loss and accuracy surfaces: along random or PCA directions around a model (1D curves, 2D grids), and along the
line between two models (1D linear interpolation, Goodfellow et al. 2015). Evaluated in batches with a progress
bar, optionally in several processes, resumable from a partial grid saved in ``out_dir``; the model's weights are
restored bit for bit afterwards."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effdl.analysis.config import LandscapeConfig
from effdl.analysis.directions import Direction, check_direction, direction_norm, random_directions
from effdl.analysis.hessian import hessian_spectrum
from effdl.core.errors import CheckpointError, ConfigError, ShapeError
from effdl.core.io import atomic_write_bytes, atomic_write_json
from effdl.measure.evaluation import evaluate, stack_batches
from effdl.scale.executor import ExecutorConfig, run_units

__all__ = ["Surface", "interpolate_models", "loss_surface", "restored_weights"]

log = logging.getLogger(__name__)

PARTIAL = "surface.partial.npz"
SAVE_EVERY_S = 10.0


@contextlib.contextmanager
def restored_weights(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager that snapshots every parameter and buffer of ``model`` (and its train/eval mode) and
    copies them back on exit, so the weights are bit-identical afterwards whatever happened inside.

    Example:
        >>> lin = nn.Linear(2, 2); before = lin.weight.detach().clone()
        >>> with restored_weights(lin), torch.no_grad():
        ...     _ = lin.weight.add_(1.0)
        >>> torch.equal(lin.weight, before)
        True
    """
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    was_training = model.training
    try:
        yield model
    finally:
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                v.copy_(saved[k])
        model.train(was_training)


@dataclasses.dataclass
class Surface:
    """Metrics on a grid of coordinates.

    Attributes:
        axes: one coordinate array per dimension (1 or 2).
        values: ``"split/metric"`` (e.g. ``"train/loss"``, ``"test/accuracy"``) -> array of shape
            ``(len(axes[0]),)`` or ``(len(axes[0]), len(axes[1]))``; entry ``[i, j]`` is at
            ``(axes[0][i], axes[1][j])``.
        kind: ``directions`` (random/PCA directions around a model) or ``interpolation`` (between two models,
            coordinate 0 is the first model and 1 the second).
        info: how it was made (config, direction norms, PCA explained variance, ...).
        path: for PCA directions, the ``(T, 2)`` coordinates of the optimization path (for the overlay).

    Example:
        >>> s = Surface([np.array([-1.0, 0.0, 1.0])], {"train/loss": np.array([2.0, 0.5, 1.5])})
        >>> s.origin(), float(s.values["train/loss"][s.origin()])
        ((1,), 0.5)
    """

    axes: list[np.ndarray]
    values: dict[str, np.ndarray]
    kind: str = "directions"
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: np.ndarray | None = None

    @property
    def dims(self) -> int:
        """1 or 2."""
        return len(self.axes)

    def origin(self) -> tuple[int, ...] | None:
        """Grid index of coordinate 0 on every axis (the trained weights, or the first model), if on the grid."""
        index = []
        for axis in self.axes:
            hits = np.flatnonzero(axis == 0.0)
            if not len(hits):
                return None
            index.append(int(hits[0]))
        return tuple(index)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (what ``surface.json`` holds)."""
        return {
            "kind": self.kind,
            "axes": [a.tolist() for a in self.axes],
            "values": {k: v.tolist() for k, v in self.values.items()},
            "path": None if self.path is None else self.path.tolist(),
            "info": self.info,
        }

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Writes ``surface.npz`` (arrays: ``axis0``, ``axis1``, one per metric with ``/`` as ``__``) and
        ``surface.json`` into ``out_dir`` atomically; returns their paths."""
        out = Path(out_dir)
        arrays = {f"axis{i}": a for i, a in enumerate(self.axes)}
        arrays.update({k.replace("/", "__"): v for k, v in self.values.items()})
        if self.path is not None:
            arrays["path"] = self.path
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return {
            "npz": atomic_write_bytes(out / "surface.npz", buf.getvalue()),
            "json": atomic_write_json(out / "surface.json", self.to_dict()),
        }

    @classmethod
    def load(cls, path: str | os.PathLike) -> Surface:
        """Reads a ``surface.json`` written by :meth:`save` (or the folder holding it)."""
        p = Path(path)
        p = p / "surface.json" if p.is_dir() else p
        try:
            doc = json.loads(p.read_text())
            return cls(
                axes=[np.asarray(a, dtype=float) for a in doc["axes"]],
                values={k: np.asarray(v, dtype=float) for k, v in doc["values"].items()},
                kind=doc["kind"],
                info=doc.get("info", {}),
                path=None if doc.get("path") is None else np.asarray(doc["path"], dtype=float),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{p} is not a surface.json written by effdl ({exc}); compute it again") from exc


# ------------------------------------------------------------------ where the weights go at a grid point
class _Plane:
    """``theta = theta_0 + x * d_1 (+ y * d_2)`` over the parameters (buffers stay as trained)."""

    def __init__(self, model: nn.Module, directions: Sequence[Direction]):
        self.base = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.directions = [{n: d[n].detach().to(self.base[n].dtype) for n in self.base} for d in directions]

    def apply(self, model: nn.Module, coords: Sequence[float]) -> None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self.base[name])
                for d, c in zip(self.directions, coords, strict=True):
                    if c != 0.0:  # keeps the trained weights bit-exact at the origin
                        p.add_(d[name], alpha=float(c))

    def tensors(self) -> Iterator[torch.Tensor]:
        yield from self.base.values()
        for d in self.directions:
            yield from d.values()


class _Line:
    """``theta = (1 - a) theta_A + a theta_B`` with ``torch.lerp`` (exact at ``a = 0`` and ``a = 1``) over the
    parameters, and over floating-point buffers (BatchNorm statistics) with ``a`` clamped to [0, 1]: extrapolated
    running variances could turn negative."""

    def __init__(self, a: nn.Module, b: nn.Module):
        sa, sb = a.state_dict(), b.state_dict()
        problems = [k for k in sa if k not in sb] + [k for k in sb if k not in sa]
        problems += [
            f"{k} {tuple(sa[k].shape)} vs {tuple(sb[k].shape)}" for k in sa if k in sb and sa[k].shape != sb[k].shape
        ]
        if problems:
            raise ConfigError(
                f"cannot interpolate between models of different architectures: {problems[:5]}; pass two checkpoints "
                "of the same model (e.g. two training runs, or dense vs unstructured-pruned weights; structured "
                "pruning changes shapes)"
            )
        self.a = {k: v.detach().clone() for k, v in sa.items() if v.is_floating_point()}
        self.b = {k: sb[k].detach().clone() for k in self.a}
        self.buffers = {k for k, _ in a.named_buffers()}

    def apply(self, model: nn.Module, coords: Sequence[float]) -> None:
        (alpha,) = coords
        state = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for k, a in self.a.items():
                w = min(max(float(alpha), 0.0), 1.0) if k in self.buffers else float(alpha)
                state[k].copy_(torch.lerp(a, self.b[k], w))

    def tensors(self) -> Iterator[torch.Tensor]:
        yield from self.a.values()
        yield from self.b.values()


# ------------------------------------------------------------------ evaluation
def _split_batches(data: Any, config: LandscapeConfig) -> dict[str, list[tuple]]:
    out = {}
    for split in config.splits:
        ds = data.get(split) if isinstance(data, Mapping) else getattr(data, split, None)
        if ds is None:
            raise ConfigError(
                f"the data has no split {split!r}; pass a DatasetSplits or a dict of datasets with "
                f"keys {list(config.splits)}, or set splits= to the ones you have"
            )
        out[split] = stack_batches(ds, config.batch_size, max_examples=config.max_examples)
    return out


def _evaluate_at(model, placer, coords, batches, loss_fn, convexity: int) -> dict[str, float]:
    placer.apply(model, coords)
    values = {}
    for split, split_batches in batches.items():
        m = evaluate(model, split_batches, loss_fn=loss_fn)
        values[f"{split}/loss"] = m["loss"]
        values[f"{split}/accuracy"] = m["accuracy"]
        if convexity:
            spectrum = hessian_spectrum(model, split_batches, iterations=convexity, loss_fn=loss_fn)
            values[f"{split}/lambda_max"] = spectrum.top[0]
            values[f"{split}/lambda_min"] = spectrum.min
            values[f"{split}/eigen_ratio"] = spectrum.ratio
    return values


def _metric_names(convexity: int) -> tuple[str, ...]:
    return ("loss", "accuracy") + (("lambda_max", "lambda_min", "eigen_ratio") if convexity else ())


def _unit_run(shared: tuple, points: list[tuple[tuple[int, ...], tuple[float, ...]]]) -> list[tuple[tuple, dict]]:
    model, placer, batches, loss_fn, convexity = shared
    with restored_weights(model):
        return [(idx, _evaluate_at(model, placer, c, batches, loss_fn, convexity)) for idx, c in points]


def _fingerprint(placer, axes, batches, config: LandscapeConfig, loss_fn) -> str:
    h = hashlib.sha256()
    for t in placer.tensors():
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    for a in axes:
        h.update(np.asarray(a, dtype=np.float64).tobytes())
    for split, bs in batches.items():
        h.update(f"{split}:{sum(len(b[1]) for b in bs)}:{config.batch_size}".encode())
    h.update(repr(getattr(loss_fn, "__qualname__", loss_fn)).encode())
    h.update(f"convexity={config.convexity}".encode())
    return h.hexdigest()


class _Partial:
    """The grid computed so far, saved to ``out_dir/surface.partial.npz`` (plain arrays, no pickle)."""

    def __init__(self, path: Path | None, fingerprint: str, shape: tuple[int, ...], keys: list[str], resume: bool):
        self.path, self.fingerprint = path, fingerprint
        self.values = {k: np.full(shape, np.nan) for k in keys}
        self.done = np.zeros(shape, dtype=bool)
        self.last_save = time.monotonic()
        if path is None or not path.exists():
            return
        if not resume:
            raise ConfigError(
                f"{path} holds a partly computed surface; pass resume=True (CLI: --resume) to continue it, or "
                "delete the file to start over"
            )
        try:
            with np.load(path, allow_pickle=False) as f:
                stored = str(f["fingerprint"])
                arrays = {k: f[k.replace("/", "__")] for k in keys}
                done = f["done"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise CheckpointError(f"{path} is unreadable ({exc}); delete it to start over") from exc
        if stored != fingerprint:
            raise ConfigError(
                f"{path} was computed for other weights, directions, grid or data; delete it (or use another "
                "out_dir) to compute this surface"
            )
        self.values, self.done = arrays, done
        log.info("resuming a surface: %d of %d points already computed", int(done.sum()), done.size)

    def record(self, idx: tuple[int, ...], values: dict[str, float]) -> None:
        for k, v in values.items():
            self.values[k][idx] = v
        self.done[idx] = True
        if self.path is not None and time.monotonic() - self.last_save > SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        if self.path is None:
            return
        buf = io.BytesIO()
        arrays = {k.replace("/", "__"): v for k, v in self.values.items()}
        np.savez(buf, fingerprint=np.array(self.fingerprint), done=self.done, **arrays)
        atomic_write_bytes(self.path, buf.getvalue())
        self.last_save = time.monotonic()


def _grid(
    model: nn.Module,
    placer,
    axes: list[np.ndarray],
    data: Any,
    config: LandscapeConfig,
    *,
    out_dir: str | os.PathLike | None,
    resume: bool,
    loss_fn: Callable | None,
    desc: str,
) -> dict[str, np.ndarray]:
    batches = _split_batches(data, config)
    shape = tuple(len(a) for a in axes)
    keys = [f"{s}/{m}" for s in batches for m in _metric_names(config.convexity)]
    path = None if out_dir is None else Path(out_dir) / PARTIAL
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    partial = _Partial(path, _fingerprint(placer, axes, batches, config, loss_fn), shape, keys, resume)
    todo = [
        (idx, tuple(float(axes[d][i]) for d, i in enumerate(idx))) for idx in np.ndindex(shape) if not partial.done[idx]
    ]
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=partial.done.size, initial=int(partial.done.sum()), desc=desc, unit="pt")
    try:
        with restored_weights(model):
            if (config.workers == 1 and config.backend == "local") or not todo:
                for idx, coords in todo:
                    partial.record(idx, _evaluate_at(model, placer, coords, batches, loss_fn, config.convexity))
                    if bar is not None:
                        bar.update()
            else:
                _run_parallel(model, placer, todo, batches, (loss_fn, config.convexity), config, partial, bar)
    finally:
        partial.save()
        if bar is not None:
            bar.close()
    if path is not None:
        path.unlink(missing_ok=True)
    return partial.values


def _run_parallel(model, placer, todo, batches, how: tuple, config: LandscapeConfig, partial: _Partial, bar) -> None:
    # the same thread count on every backend: sums rounded alike, so that the grid is bit-identical
    threads = max(1, torch.get_num_threads() // config.workers)
    executor = ExecutorConfig(backend=config.backend, workers=config.workers, address=config.address, threads=threads)
    chunk = max(1, min(16, len(todo) // (4 * config.workers)))
    chunks = {f"points {i}..{min(i + chunk, len(todo)) - 1}": todo[i : i + chunk] for i in range(0, len(todo), chunk)}

    def record(key: str, values: list) -> None:
        for idx, vals in values:
            partial.record(tuple(idx), vals)
            if bar is not None:
                bar.update()

    out = run_units(_unit_run, chunks, executor, shared=(model, placer, batches, *how), on_result=record)
    partial.save()
    out.raise_failures(
        "chunks of grid points",
        "the finished points are saved: fix the cause and run again with resume=True (CLI: --resume) to compute "
        "only the missing ones",
    )


def _axis(span: tuple[float, float], resolution: int) -> np.ndarray:
    axis = np.linspace(span[0], span[1], resolution)
    axis[np.isclose(axis, 0.0, atol=1e-12)] = 0.0  # the trained weights land exactly on the grid
    return axis


def loss_surface(
    model: nn.Module,
    data: Any,
    config: LandscapeConfig | None = None,
    *,
    directions: Sequence[Direction] | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Surface:
    """Loss and accuracy of ``model`` at ``theta + x d1 (+ y d2)`` over a grid of ``(x, y)``.

    Args:
        model: the trained model; its weights and buffers are bit-identical afterwards.
        data: a :class:`~effdl.data.DatasetSplits` or a dict of datasets, keyed by the names in
            ``config.splits``.
        config: grid, directions and evaluation settings.
        directions: ``config.dims`` directions (dicts of parameter tensors, e.g. from
            :func:`~effdl.analysis.trajectory_directions`); default: seeded random directions normalized per
            ``config.norm``/``config.ignore``.
        out_dir: where the partial grid is saved while computing (None: kept in memory only).
        resume: continue a partial grid found in ``out_dir``.
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch's mean loss; default cross-entropy.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> _ = torch.manual_seed(0); net = nn.Linear(4, 3)
        >>> ds = TensorDataset(torch.randn(32, 4), torch.randint(0, 3, (32,)))
        >>> s = loss_surface(net, {"train": ds}, LandscapeConfig(dims=2, resolution=5, splits=("train",),
        ...                                                    ignore="none", progress=False))
        >>> s.values["train/loss"].shape, bool(s.values["train/loss"][2, 2] == evaluate(net, ds)["loss"])
        ((5, 5), True)
    """
    config = config or LandscapeConfig()
    if directions is None:
        directions = random_directions(
            model, config.dims, norm=config.norm, ignore=config.ignore, orthogonal=config.orthogonal, seed=config.seed
        )
    if len(directions) != config.dims:
        raise ShapeError(f"dims={config.dims} needs {config.dims} direction(s), got {len(directions)}")
    for d in directions:
        check_direction(model, d)
    axes = [_axis(config.xrange, config.resolution)]
    if config.dims == 2:
        axes.append(_axis(config.yrange, config.resolution))
    placer = _Plane(model, directions)
    values = _grid(
        model,
        placer,
        axes,
        data,
        config,
        out_dir=out_dir,
        resume=resume,
        loss_fn=loss_fn,
        desc=f"{config.dims}D surface",
    )
    info = {"config": config.to_dict(), "direction_norms": [direction_norm(d) for d in directions]}
    return Surface(axes=axes, values=values, kind="directions", info=info)


def interpolate_models(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Any,
    config: LandscapeConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Surface:
    """Loss and accuracy along ``(1 - a) theta_A + a theta_B`` (parameters and BatchNorm statistics) for ``a`` on
    ``config.xrange`` (default ``(-0.5, 1.5)`` here): the 1D interpolation plot of Goodfellow et al. (2015) used
    by Li et al. (2018) to compare small- and large-batch solutions; also for dense vs pruned weights.
    ``model_a`` is used for evaluation and restored bit for bit; ``model_b`` is only read.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> a, b = nn.Linear(4, 3), nn.Linear(4, 3)
        >>> ds = TensorDataset(torch.randn(16, 4), torch.randint(0, 3, (16,)))
        >>> s = interpolate_models(a, b, {"train": ds}, LandscapeConfig(dims=1, resolution=5, xrange=(0.0, 1.0),
        ...                                                            splits=("train",), progress=False))
        >>> float(s.values["train/loss"][-1]) == evaluate(b, ds)["loss"]
        True
    """
    config = config or LandscapeConfig(dims=1, xrange=(-0.5, 1.5))
    if config.dims != 1:
        raise ConfigError(f"interpolation between two models is one-dimensional; got dims={config.dims}, use dims=1")
    placer = _Line(model_a, model_b)
    axes = [_axis(config.xrange, config.resolution)]
    values = _grid(
        model_a, placer, axes, data, config, out_dir=out_dir, resume=resume, loss_fn=loss_fn, desc="interpolation"
    )
    return Surface(axes=axes, values=values, kind="interpolation", info={"config": config.to_dict()})
