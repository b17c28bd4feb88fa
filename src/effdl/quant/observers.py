"""Observers: collect statistics of a tensor over calibration batches and turn them into a scale and zero point.

Each observer is a small ``nn.Module`` (its running statistics are buffers, so they are saved and restored with
the model) with two methods: ``update(x)`` and ``qparams(bits, symmetric=..., signed=...)``. ``axis`` selects
per-channel statistics (the output-channel axis of a weight, 0); ``None`` is per tensor.

- ``minmax``: the smallest and largest value seen.
- ``moving_average``: exponential moving average of each batch's min and max (for QAT activations).
- ``percentile``: the mean over batches of the p-th and (100-p)-th percentiles (clips outliers).
- ``mse``: searches the clipping range that minimizes the quantization error on a sample of the values seen.
- ``entropy``: the clipping threshold that minimizes the KL divergence of the quantized histogram (TensorRT).
"""

from __future__ import annotations

import torch
from torch import nn

from effdl.core.config import check_range
from effdl.core.errors import ConfigError
from effdl.core.registry import Registry
from effdl.quant.math import dequantize, qparams_from_range, qrange, quantize

__all__ = [
    "OBSERVERS",
    "EntropyObserver",
    "MSEObserver",
    "MinMaxObserver",
    "MovingAverageObserver",
    "Observer",
    "PercentileObserver",
    "create_observer",
]

OBSERVERS: Registry[type] = Registry("observer")


class Observer(nn.Module):
    """Base class: running ``min_val`` / ``max_val`` (per tensor or per channel along ``axis``).

    Args:
        axis: channel axis for per-channel statistics, or None.
    """

    def __init__(self, *, axis: int | None = None) -> None:
        super().__init__()
        self.axis = axis
        self.register_buffer("min_val", torch.empty(0))
        self.register_buffer("max_val", torch.empty(0))

    @property
    def initialized(self) -> bool:
        """True once a batch has been seen."""
        return self.min_val.numel() > 0

    def _reduce(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().float()
        if x.numel() == 0:
            raise ConfigError("an observer received an empty tensor; calibrate with non-empty batches")
        if self.axis is None:
            return x.min(), x.max()
        flat = x.transpose(0, self.axis).reshape(x.shape[self.axis], -1)
        return flat.min(dim=1).values, flat.max(dim=1).values

    def update(self, x: torch.Tensor) -> None:
        """Folds one batch into the statistics."""
        lo, hi = self._reduce(x)
        if not self.initialized:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val, self.max_val = torch.minimum(self.min_val, lo), torch.maximum(self.max_val, hi)

    def qparams(self, bits: int, *, symmetric: bool, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point for a ``bits``-bit code from the statistics so far."""
        if not self.initialized:
            raise ConfigError(
                f"{type(self).__name__} has seen no data; run calibration batches through the model first "
                "(calibrate(model, data)), or pass data= to quantize_"
            )
        return qparams_from_range(self.min_val, self.max_val, bits, symmetric=symmetric, signed=signed)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("min_val", "max_val"):  # shapes are set by the first batch; accept the saved ones
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@OBSERVERS.register("minmax", description="running min and max")
class MinMaxObserver(Observer):
    """The range of every value seen.

    Example:
        >>> o = MinMaxObserver()
        >>> o.update(torch.tensor([-1.0, 2.0])); o.update(torch.tensor([3.0]))
        >>> s, z = o.qparams(8, symmetric=True, signed=True)
        >>> round(float(s), 5)  # 3 / 127
        0.02362
    """


@OBSERVERS.register("moving_average", description="exponential moving average of each batch's min and max")
class MovingAverageObserver(Observer):
    """``stat <- (1 - momentum) * stat + momentum * batch_stat``, initialized with the first batch.

    Example:
        >>> o = MovingAverageObserver(momentum=0.5)
        >>> o.update(torch.tensor([0.0, 2.0])); o.update(torch.tensor([0.0, 4.0]))
        >>> float(o.max_val)
        3.0
    """

    def __init__(self, *, axis: int | None = None, momentum: float = 0.1) -> None:
        super().__init__(axis=axis)
        check_range("momentum", momentum, 0.0, 1.0, low_open=True, hint="use momentum=0.1")
        self.momentum = momentum

    def update(self, x: torch.Tensor) -> None:
        lo, hi = self._reduce(x)
        if not self.initialized:
            self.min_val, self.max_val = lo, hi
            return
        m = self.momentum
        self.min_val = (1 - m) * self.min_val + m * lo
        self.max_val = (1 - m) * self.max_val + m * hi


@OBSERVERS.register("percentile", description="mean over batches of the p and 100-p percentiles (clips outliers)")
class PercentileObserver(Observer):
    """Per batch, the ``100 - p`` and ``p`` percentiles (on at most ``max_samples`` values per channel), averaged
    over batches.

    Example:
        >>> o = PercentileObserver(percentile=99.0)
        >>> o.update(torch.cat([torch.linspace(0, 1, 1000), torch.tensor([100.0])]))
        >>> float(o.max_val) < 2.0
        True
    """

    def __init__(self, *, axis: int | None = None, percentile: float = 99.99, max_samples: int = 100_000) -> None:
        super().__init__(axis=axis)
        check_range("percentile", percentile, 50.0, 100.0, hint="use percentile=99.99")
        self.percentile = percentile
        self.max_samples = max_samples
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        flat = x.reshape(1, -1) if self.axis is None else x.transpose(0, self.axis).reshape(x.shape[self.axis], -1)
        if flat.shape[1] > self.max_samples:  # evenly spaced subsample keeps it deterministic
            idx = torch.linspace(0, flat.shape[1] - 1, self.max_samples).long()
            flat = flat[:, idx]
        q = torch.tensor([1 - self.percentile / 100, self.percentile / 100])
        lo, hi = torch.quantile(flat, q, dim=1)
        if self.axis is None:
            lo, hi = lo[0], hi[0]
        n = int(self.batches)
        if not self.initialized:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = (self.min_val * n + lo) / (n + 1)
            self.max_val = (self.max_val * n + hi) / (n + 1)
        self.batches += 1


@OBSERVERS.register("mse", description="clipping range that minimizes the quantization MSE on a sample")
class MSEObserver(Observer):
    """Keeps the running range and a sample of up to ``max_samples`` values per channel; ``qparams`` scales the
    range by each of ``steps`` factors in ``[0.2, 1]`` and keeps the one with the least squared error.

    Example:
        >>> o = MSEObserver()
        >>> o.update(torch.cat([torch.randn(5000, generator=torch.Generator().manual_seed(0)), torch.tensor([40.0])]))
        >>> s, _ = o.qparams(4, symmetric=True, signed=True)
        >>> float(s) < 40 / 7  # the outlier is clipped
        True
    """

    def __init__(self, *, axis: int | None = None, max_samples: int = 20_000, steps: int = 40) -> None:
        super().__init__(axis=axis)
        self.max_samples = max_samples
        self.steps = steps
        self.register_buffer("sample", torch.empty(0), persistent=False)

    def update(self, x: torch.Tensor) -> None:
        super().update(x)
        x = x.detach().float()
        flat = x.reshape(1, -1) if self.axis is None else x.transpose(0, self.axis).reshape(x.shape[self.axis], -1)
        sample = flat if self.sample.numel() == 0 else torch.cat([self.sample, flat], dim=1)
        if sample.shape[1] > self.max_samples:
            idx = torch.linspace(0, sample.shape[1] - 1, self.max_samples).long()
            sample = sample[:, idx]
        self.sample = sample

    def qparams(self, bits: int, *, symmetric: bool, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        scale, zp = super().qparams(bits, symmetric=symmetric, signed=signed)
        if self.sample.numel() == 0:  # restored from a checkpoint: no sample, use the range
            return scale, zp
        qmin, qmax = qrange(bits, signed=signed)
        sample = self.sample
        best_err = torch.full((sample.shape[0],), float("inf"))
        best_scale, best_zp = scale.clone().reshape(-1), zp.clone().reshape(-1)
        lo, hi = self.min_val.reshape(-1), self.max_val.reshape(-1)
        for i in range(self.steps):
            f = 0.2 + 0.8 * (i + 1) / self.steps
            s, z = qparams_from_range(lo * f, hi * f, bits, symmetric=symmetric, signed=signed)
            s, z = s.reshape(-1), z.reshape(-1)
            x_hat = dequantize(quantize(sample, s, z, qmin, qmax, axis=0), s, z, axis=0)
            err = ((x_hat - sample) ** 2).mean(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_scale, best_zp = torch.where(better, s, best_scale), torch.where(better, z, best_zp)
        return best_scale.reshape(scale.shape), best_zp.reshape(zp.shape)


@OBSERVERS.register("entropy", description="clipping threshold that minimizes the KL divergence (TensorRT's method)")
class EntropyObserver(MSEObserver):
    """TensorRT's entropy calibration (Migacz 2017): a 2048-bin histogram of ``|x|`` over the sample; for each
    candidate threshold the clipped distribution ``P`` (outliers added to its last bin) is merged into
    ``2^bits`` levels and expanded back to ``Q``; the threshold with the least ``KL(P || Q)`` bounds the range.

    Example:
        >>> o = EntropyObserver()
        >>> g = torch.Generator().manual_seed(0)
        >>> o.update(torch.cat([torch.randn(20000, generator=g).abs(), torch.tensor([50.0])]))
        >>> s, _ = o.qparams(8, symmetric=False, signed=False)
        >>> float(s) * 255 < 25  # the range stops well before the outlier
        True
    """

    bins = 2048

    def __init__(self, *, axis: int | None = None, max_samples: int = 500_000) -> None:
        super().__init__(axis=axis, max_samples=max_samples)  # a histogram's tail needs many values

    def qparams(self, bits: int, *, symmetric: bool, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sample.numel() == 0 or self.axis is not None:  # per-channel (weights) or restored: the range
            return Observer.qparams(self, bits, symmetric=symmetric, signed=signed)
        mags = self.sample.abs().reshape(-1).double()
        top = float(mags.max())
        if top == 0.0:
            return Observer.qparams(self, bits, symmetric=symmetric, signed=signed)
        hist = torch.histc(mags, bins=self.bins, min=0.0, max=top)
        hist[0] = hist[1]  # the exact zeros of a ReLU output say nothing about where to clip (as TensorRT's tools)
        levels = 2**bits if not signed else 2 ** (bits - 1)
        best, best_i = float("inf"), self.bins
        for i in range(levels, self.bins + 1, max(1, (self.bins - levels) // 128)):
            p = hist[:i].clone()
            p[-1] += hist[i:].sum()  # outliers clipped into the last bin
            q = _merged(hist[:i], levels)
            kl = _kl(p, q)
            if kl < best:
                best, best_i = kl, i
        t = top * best_i / self.bins
        lo, hi = torch.clamp(self.min_val, min=-t), torch.clamp(self.max_val, max=t)
        return qparams_from_range(lo, hi, bits, symmetric=symmetric, signed=signed)


def _merged(p: torch.Tensor, levels: int) -> torch.Tensor:
    """``p`` merged into ``levels`` groups of bins, each group's mass spread over its non-empty bins."""
    idx = torch.div(torch.arange(len(p)) * levels, len(p), rounding_mode="floor")
    mass = torch.zeros(levels, dtype=p.dtype).index_add_(0, idx, p)
    count = torch.zeros(levels, dtype=p.dtype).index_add_(0, idx, (p > 0).to(p.dtype))
    return torch.where(p > 0, mass[idx] / count[idx].clamp(min=1), torch.zeros_like(p))


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    p, q = p / p.sum(), q / q.sum().clamp(min=1e-12)
    live = p > 0
    return float((p[live] * torch.log(p[live] / q[live].clamp(min=1e-12))).sum())


def create_observer(name_or_factory, *, axis: int | None = None) -> Observer:
    """An observer from a registered name (``minmax``, ``moving_average``, ``percentile``, ``mse``) or a callable
    ``factory(axis=...)``.

    Example:
        >>> type(create_observer("mse", axis=0)).__name__
        'MSEObserver'
    """
    factory = OBSERVERS.get(name_or_factory, allow_callable=True)
    return factory(axis=axis)
