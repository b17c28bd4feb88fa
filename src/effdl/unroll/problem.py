"""Sparse linear inverse problems ``b = A x* + noise``: the dictionary, seeded sample streams and the NMSE metric.

The default is the standard setting of the LISTA literature (Chen et al. 2018; Liu et al. 2019): a 250 x 500
Gaussian dictionary with unit-norm columns, ``x*`` with Bernoulli(0.1) support and standard normal values, no noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import torch

from effdl.core.config import Config, check_choice, check_range
from effdl.core.errors import ConfigError, ShapeError

__all__ = ["Problem", "SparseProblem", "check_dictionary", "gaussian_dictionary", "make_problem", "nmse_db"]

MAGNITUDES = ("gaussian", "uniform", "sign")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SparseProblem(Config):
    """A family of sparse recovery problems.

    Args:
        m: measurements (rows of ``A``).
        n: signal length (columns of ``A``), ``n >= m``.
        sparsity: probability that an entry of ``x*`` is non-zero, in (0, 1).
        magnitude: distribution of the non-zero values: ``gaussian`` (N(0, 1)), ``uniform`` (U[1, 2] with a random
            sign) or ``sign`` (+-1).
        snr_db: signal-to-noise ratio of ``b`` in dB; ``None`` for noiseless measurements.
        condition: condition number of ``A`` before its columns are normalized; ``None`` for a plain Gaussian matrix.
        seed: seed of the dictionary (and of nothing else: sample streams take their own seeds).

    Example:
        >>> SparseProblem().to_dict()["m"], SparseProblem().n
        (250, 500)
        >>> SparseProblem(sparsity=1.5)
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: sparsity must be in (0.0, 1.0), got sparsity=1.5; ...
    """

    m: int = 250
    n: int = 500
    sparsity: float = 0.1
    magnitude: str = "gaussian"
    snr_db: float | None = None
    condition: float | None = None
    seed: int = 0

    def validate(self) -> None:
        check_range("m", self.m, 1, hint="use m=250 measurements")
        check_range("n", self.n, 1, hint="use n=500")
        if self.n < self.m:
            raise ConfigError(
                f"n must be >= m (an under-determined system), got m={self.m}, n={self.n}; use m=250, n=500"
            )
        check_range("sparsity", self.sparsity, 0.0, 1.0, low_open=True, high_open=True,
                    hint="it is the fraction of non-zero entries; use sparsity=0.1")  # fmt: skip
        check_choice("magnitude", self.magnitude, MAGNITUDES)
        if self.snr_db is not None:
            check_range("snr_db", self.snr_db, hint="use snr_db=40, or None for noiseless measurements")
        if self.condition is not None:
            check_range("condition", self.condition, 1.0, hint="use condition=5 (1 is perfectly conditioned)")


def gaussian_dictionary(m: int, n: int, *, seed: int = 0, condition: float | None = None) -> torch.Tensor:
    """An ``m x n`` matrix with i.i.d. N(0, 1/m) entries and unit-norm columns.

    With ``condition``, the singular values are replaced by a geometric sequence from 1 to ``1/condition``
    before the columns are normalized (the ill-conditioned setting of Chen et al. 2018).

    Example:
        >>> A = gaussian_dictionary(20, 40, seed=1)
        >>> A.shape, bool(torch.allclose(A.norm(dim=0), torch.ones(40)))
        (torch.Size([20, 40]), True)
    """
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=gen, dtype=torch.float64) / math.sqrt(m)
    if condition is not None:
        u, _, vh = torch.linalg.svd(A, full_matrices=False)  # u (m, m), vh (m, n)
        s = torch.logspace(0, -math.log10(condition), m, dtype=torch.float64)
        A = u @ torch.diag(s) @ vh
    A = A / A.norm(dim=0, keepdim=True)
    return A.to(torch.float32)


def check_dictionary(A: torch.Tensor) -> torch.Tensor:
    """Checks that ``A`` is a finite 2-D matrix without zero columns; returns it as a floating tensor (float64
    stays float64, other types become float32).

    Example:
        >>> check_dictionary(torch.zeros(3, 4))
        Traceback (most recent call last):
        ...
        effdl.core.errors.ShapeError: the dictionary has 4 zero column(s) (first: 0); ...
    """
    if not isinstance(A, torch.Tensor):
        raise ShapeError(f"the dictionary must be a torch.Tensor, got {type(A).__name__}")
    if A.dim() != 2:
        raise ShapeError(f"the dictionary must be a 2-D (m, n) matrix, got shape {tuple(A.shape)}")
    if A.shape[0] < 1 or A.shape[1] < 1:
        raise ShapeError(f"the dictionary is empty: shape {tuple(A.shape)}")
    if not torch.isfinite(A).all():
        raise ShapeError("the dictionary has NaN or infinite entries; clean it before building a solver")
    norms = A.norm(dim=0)
    zero = (norms <= 1e-12 * max(norms.max().item(), 1.0)).nonzero().flatten().tolist()
    if zero:
        raise ShapeError(
            f"the dictionary has {len(zero)} zero column(s) (first: {zero[0]}); an atom that measures nothing "
            "cannot be recovered: drop those columns (and the matching entries of x)"
        )
    return A if A.dtype in (torch.float32, torch.float64) else A.to(torch.float32)


class Problem:
    """A concrete problem: the dictionary ``A`` of a :class:`SparseProblem` and seeded streams of ``(b, x*)``.

    Args:
        spec: the :class:`SparseProblem`.
        A: an explicit dictionary instead of the generated one (checked with :func:`check_dictionary`); its columns
            are used as they are.

    Example:
        >>> p = Problem(SparseProblem(m=20, n=40))
        >>> b, x = p.sample(8, seed=3)
        >>> b.shape, x.shape
        (torch.Size([8, 20]), torch.Size([8, 40]))
        >>> bool(torch.allclose(b, x @ p.A.T))  # noiseless
        True
    """

    def __init__(self, spec: SparseProblem | None = None, A: torch.Tensor | None = None) -> None:
        spec = spec or SparseProblem()
        if A is None:
            A = gaussian_dictionary(spec.m, spec.n, seed=spec.seed, condition=spec.condition)
        else:
            A = check_dictionary(A)
            if tuple(A.shape) != (spec.m, spec.n):
                spec = spec.replace(m=A.shape[0], n=A.shape[1])
        self.spec = spec
        self.A = A

    @property
    def m(self) -> int:
        """Rows of ``A`` (measurements)."""
        return self.A.shape[0]

    @property
    def n(self) -> int:
        """Columns of ``A`` (signal length)."""
        return self.A.shape[1]

    def fingerprint(self) -> str:
        """A short hash of ``A``: solvers trained for one dictionary refuse another.

        Example:
            >>> len(Problem(SparseProblem(m=4, n=8)).fingerprint())
            16
        """
        return hashlib.sha256(self.A.contiguous().numpy().tobytes()).hexdigest()[:16]

    def sample(self, count: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` problems ``(b, x*)`` of shapes ``(count, m)`` and ``(count, n)``, a function of ``seed`` only.

        Example:
            >>> p = Problem(SparseProblem(m=10, n=20))
            >>> bool((p.sample(4, seed=1)[1] == p.sample(4, seed=1)[1]).all())
            True
        """
        if count < 1:
            raise ConfigError(f"count must be >= 1, got {count}")
        gen = torch.Generator().manual_seed(int(seed))
        support = torch.rand(count, self.n, generator=gen) < self.spec.sparsity
        if self.spec.magnitude == "gaussian":
            values = torch.randn(count, self.n, generator=gen)
        elif self.spec.magnitude == "uniform":
            sign = torch.where(torch.rand(count, self.n, generator=gen) < 0.5, -1.0, 1.0)
            values = sign * (1.0 + torch.rand(count, self.n, generator=gen))
        else:
            values = torch.where(torch.rand(count, self.n, generator=gen) < 0.5, -1.0, 1.0)
        x = values * support
        b = x @ self.A.T  # (count, m)
        if self.spec.snr_db is not None:
            # noise power set from the sample's own signal power: SNR = 10 log10(||Ax||^2 / ||e||^2)
            power = b.pow(2).mean(dim=1, keepdim=True)
            std = torch.sqrt(power / 10 ** (self.spec.snr_db / 10))
            b = b + std * torch.randn(count, self.m, generator=gen)
        return b, x

    def check_measurements(self, b: torch.Tensor) -> torch.Tensor:
        """Checks that ``b`` is ``(batch, m)`` (or ``(m,)``, made a batch of one).

        Example:
            >>> Problem(SparseProblem(m=10, n=20)).check_measurements(torch.zeros(3, 7))
            Traceback (most recent call last):
            ...
            effdl.core.errors.ShapeError: measurements b must have shape (batch, 10), got (3, 7); ...
        """
        return check_measurements(b, self.m)


def check_measurements(b: torch.Tensor, m: int) -> torch.Tensor:
    """Checks ``b`` against a dictionary with ``m`` rows; a vector becomes a batch of one."""
    if not isinstance(b, torch.Tensor):
        raise ShapeError(f"measurements b must be a torch.Tensor, got {type(b).__name__}")
    if b.dim() == 1:
        b = b.unsqueeze(0)
    if b.dim() != 2 or b.shape[1] != m:
        raise ShapeError(
            f"measurements b must have shape (batch, {m}), got {tuple(b.shape)}; "
            f"b = x @ A.T for a dictionary A of shape ({m}, n)"
        )
    return b


def make_problem(spec: SparseProblem | None = None, **changes) -> Problem:
    """Shorthand: ``Problem(SparseProblem(**changes))``.

    Example:
        >>> make_problem(m=30, n=60).A.shape
        torch.Size([30, 60])
    """
    spec = (spec or SparseProblem()).replace(**changes) if changes else (spec or SparseProblem())
    return Problem(spec)


def nmse_db(estimate: torch.Tensor, target: torch.Tensor) -> float:
    """Normalized mean squared error in dB over a batch: ``10 log10(sum ||x - x*||^2 / sum ||x*||^2)``.

    Example:
        >>> x = torch.ones(2, 4)
        >>> round(nmse_db(0.9 * x, x), 2)
        -20.0
    """
    if estimate.shape != target.shape:
        raise ShapeError(f"estimate and target shapes differ: {tuple(estimate.shape)} vs {tuple(target.shape)}")
    err = (estimate.double() - target.double()).pow(2).sum().item()
    ref = target.double().pow(2).sum().item()
    if ref == 0:
        raise ConfigError("NMSE is undefined for an all-zero target")
    return 10 * math.log10(max(err, 1e-300) / ref)
