"""Settings of a loss-landscape surface and of a sharpness measurement."""

from __future__ import annotations

import dataclasses

from effdl.analysis.directions import IGNORE_OPTIONS, NORMS
from effdl.core.config import Config, check_choice, check_range
from effdl.core.errors import ConfigError
from effdl.scale.executor import ExecutorConfig

__all__ = ["LandscapeConfig", "SharpnessConfig"]


def _check_span(name: str, span: tuple[float, float]) -> None:
    if len(span) != 2 or not span[0] < span[1]:
        raise ConfigError(f"{name} must be (low, high) with low < high, got {name}={span}; use {name}=(-1.0, 1.0)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LandscapeConfig(Config):
    """Where and how a loss surface is evaluated.

    Attributes:
        dims: 1 (a curve along one direction) or 2 (a surface over a plane).
        resolution: grid points per axis (at least 2; odd values put a point on the trained weights).
        xrange, yrange: coordinates spanned along the first and second direction (with filter-normalized
            directions, 1.0 moves each filter by its own norm).
        norm: direction normalization: ``filter`` (Li et al. 2018), ``layer`` or ``none``.
        ignore: ``biasbn`` keeps biases and normalization parameters fixed (zero in the directions); ``none``
            moves them too.
        orthogonal: make the second random direction exactly orthogonal to the first.
        splits: data splits to evaluate, e.g. ``("train", "test")``.
        max_examples: use at most this many examples of each split (None: all).
        batch_size: evaluation batch size.
        seed: seed of the random directions.
        workers: evaluate the grid in this many processes (1: in this process); on Ray, the CPUs of a Ray
            instance started on this machine.
        backend: ``local`` (this process or a local process pool) or ``ray`` (Ray tasks; ``effdl[ray]``).
        address: the Ray cluster to join (None: ``$RAY_ADDRESS``, else start Ray on this machine).
        convexity: if > 0, also compute the largest and smallest Hessian eigenvalues and their ratio
            ``|lambda_min / lambda_max|`` at every point with this many Lanczos steps (the convexity maps of
            Li et al. 2018; costs about that many extra backward passes per point).
        progress: show a progress bar.

    Example:
        >>> LandscapeConfig(dims=1, resolution=51).to_dict()["xrange"]
        [-1.0, 1.0]
        >>> LandscapeConfig(resolution=1)
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: resolution must be in [2, inf), got resolution=1; use resolution=21 ...
    """

    dims: int = 2
    resolution: int = 21
    xrange: tuple[float, float] = (-1.0, 1.0)
    yrange: tuple[float, float] = (-1.0, 1.0)
    norm: str = "filter"
    ignore: str = "biasbn"
    orthogonal: bool = True
    splits: tuple[str, ...] = ("train", "test")
    max_examples: int | None = None
    batch_size: int = 1000
    seed: int = 0
    workers: int = 1
    backend: str = "local"
    address: str | None = None
    convexity: int = 0
    progress: bool = True

    def validate(self) -> None:
        """Checks every field."""
        if self.dims not in (1, 2):
            raise ConfigError(f"dims must be 1 or 2, got dims={self.dims}; use dims=1 for a curve, 2 for a surface")
        check_range(
            "resolution", self.resolution, 2, hint="use resolution=21 (odd, so that the grid includes the weights)"
        )
        _check_span("xrange", self.xrange)
        _check_span("yrange", self.yrange)
        check_choice("norm", self.norm, NORMS)
        check_choice("ignore", self.ignore, IGNORE_OPTIONS)
        if not self.splits:
            raise ConfigError("splits must name at least one data split, e.g. splits=('train', 'test')")
        if self.max_examples is not None:
            check_range("max_examples", self.max_examples, 1, hint="use max_examples=None for all examples")
        check_range("batch_size", self.batch_size, 1, hint="use batch_size=1000")
        check_range("workers", self.workers, 1, hint="use workers=1 to evaluate in this process")
        ExecutorConfig(backend=self.backend, workers=self.workers, address=self.address)  # checks backend, address
        if self.convexity:
            check_range("convexity", self.convexity, 2, hint="use convexity=20 Lanczos steps, or 0 to skip")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SharpnessConfig(Config):
    """What :func:`~effdl.analysis.sharpness_report` measures.

    Attributes:
        top_k: how many of the largest Hessian eigenvalues to report.
        method: ``lanczos`` (top-k and the smallest eigenvalue, for the min/max ratio) or ``power`` (top-1 by
            power iteration, then the smallest by a shifted power iteration).
        iterations: Lanczos steps or maximum power iterations.
        trace_samples: Hutchinson samples for the Hessian trace (0: skip the trace).
        epsilon: box radius of epsilon-sharpness (Keskar et al. 2017), relative to ``|w| + 1`` (0: skip).
        ascent_steps: projected gradient-ascent steps that search the epsilon box.
        split: data split the loss is measured on.
        max_examples: examples of that split used (None: all).
        batch_size: batch size of the Hessian-vector products.
        seed: seed of the random start vectors.

    Example:
        >>> SharpnessConfig(top_k=3).method
        'lanczos'
    """

    top_k: int = 1
    method: str = "lanczos"
    iterations: int = 30
    trace_samples: int = 16
    epsilon: float = 1e-3
    ascent_steps: int = 10
    split: str = "train"
    max_examples: int | None = 2000
    batch_size: int = 500
    seed: int = 0

    def validate(self) -> None:
        """Checks every field."""
        check_range("top_k", self.top_k, 1, hint="use top_k=1")
        check_choice("method", self.method, ("lanczos", "power"))
        check_range("iterations", self.iterations, 2, hint="use iterations=30")
        if self.method == "lanczos" and self.iterations < self.top_k + 1:
            raise ConfigError(
                f"lanczos needs iterations > top_k, got iterations={self.iterations}, top_k={self.top_k}; "
                f"use iterations={max(30, 2 * self.top_k + 10)}"
            )
        check_range("trace_samples", self.trace_samples, 0, hint="use trace_samples=16 (0 skips the trace)")
        check_range("epsilon", self.epsilon, 0.0, hint="use epsilon=1e-3 (0 skips epsilon-sharpness)")
        check_range("ascent_steps", self.ascent_steps, 1, hint="use ascent_steps=10")
        if self.max_examples is not None:
            check_range("max_examples", self.max_examples, 1, hint="use max_examples=None for all examples")
        check_range("batch_size", self.batch_size, 1, hint="use batch_size=500")
