"""CPU latency measured the way a benchmark should: warm-up, many repeats, median and spread, threads recorded."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch

from effdl.core.config import check_range

__all__ = ["LatencyStats", "compare_latency", "measure_latency", "num_threads"]


@dataclasses.dataclass
class LatencyStats:
    """Summary of repeated timings in milliseconds.

    Example:
        >>> LatencyStats.from_samples([1.0, 2.0, 3.0], batch_size=1, threads=1, warmup=0).median_ms
        2.0
    """

    median_ms: float
    iqr_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    repeats: int
    warmup: int
    batch_size: int
    threads: int

    @classmethod
    def from_samples(cls, samples_ms: list[float], *, batch_size: int, threads: int, warmup: int) -> LatencyStats:
        """Builds the summary from raw samples."""
        qs = statistics.quantiles(samples_ms, n=4) if len(samples_ms) >= 2 else [samples_ms[0]] * 3
        return cls(
            median_ms=statistics.median(samples_ms),
            iqr_ms=qs[2] - qs[0],
            min_ms=min(samples_ms),
            max_ms=max(samples_ms),
            mean_ms=statistics.fmean(samples_ms),
            repeats=len(samples_ms),
            warmup=warmup,
            batch_size=batch_size,
            threads=threads,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return dataclasses.asdict(self)


@contextmanager
def num_threads(threads: int | None):
    """Temporarily sets torch's intra-op thread count (``None`` leaves it unchanged).

    Example:
        >>> with num_threads(1):
        ...     torch.get_num_threads()
        1
    """
    old = torch.get_num_threads()
    if threads is not None:
        check_range("threads", threads, 1, hint="use threads=1 for single-thread latency")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def measure_latency(
    fn: Callable[..., Any] | torch.nn.Module,
    example_inputs: Any,
    *,
    warmup: int = 10,
    repeats: int = 50,
    threads: int | None = None,
    min_time_s: float = 0.0,
) -> LatencyStats:
    """Times ``fn(*example_inputs)`` under ``torch.inference_mode``: ``warmup`` untimed calls, then at least
    ``repeats`` timed ones (and at least ``min_time_s`` seconds in all).

    Args:
        fn: a model or any callable.
        example_inputs: a tensor or a tuple of positional arguments; the batch size is read from the first one.
        warmup: untimed calls first (allocator and kernel caches warm up).
        repeats: timed calls.
        threads: torch intra-op threads during the measurement (``None``: the current setting).
        min_time_s: keep repeating until this much time has been measured.

    Example:
        >>> s = measure_latency(torch.nn.Linear(8, 8), torch.zeros(4, 8), warmup=1, repeats=5, threads=1)
        >>> s.repeats, s.batch_size, s.threads
        (5, 4, 1)
    """
    check_range("repeats", repeats, 1, hint="use repeats=50")
    check_range("warmup", warmup, 0, hint="use warmup=10")
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    batch = int(args[0].shape[0]) if args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0 else 1
    module = fn if isinstance(fn, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    samples: list[float] = []
    try:
        with num_threads(threads), torch.inference_mode():
            used = torch.get_num_threads()
            for _ in range(warmup):
                fn(*args)
            start_all = time.perf_counter()
            while len(samples) < repeats or time.perf_counter() - start_all < min_time_s:
                t0 = time.perf_counter()
                fn(*args)
                samples.append((time.perf_counter() - t0) * 1e3)
    finally:
        if module is not None:
            module.train(was_training)
    return LatencyStats.from_samples(samples, batch_size=batch, threads=used, warmup=warmup)


def compare_latency(
    fns: dict[str, Callable[..., Any]],
    example_inputs: Any,
    *,
    rounds: int = 7,
    calls: int = 5,
    min_sample_s: float = 0.01,
    threads: int | None = None,
) -> dict[str, LatencyStats]:
    """Times several models side by side: every round calls each one ``calls`` times (more when needed so that
    one sample of the fastest takes at least ``min_sample_s``; sub-millisecond calls are too short to time one by
    one), in turn, so that load from other work on the machine hits all of them alike.

    Returns:
        For each key, the statistics of its per-round mean time per call.

    Example:
        >>> a, b = torch.nn.Linear(64, 64), torch.nn.Linear(64, 8)
        >>> stats = compare_latency({"wide": a, "narrow": b}, torch.zeros(4, 64), rounds=3)
        >>> sorted(stats), stats["wide"].batch_size
        (['narrow', 'wide'], 4)
    """
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    with num_threads(threads), torch.inference_mode():
        once = []
        for fn in fns.values():
            fn(*args)
            t0 = time.perf_counter()
            fn(*args)
            once.append(time.perf_counter() - t0)
        calls = max(calls, math.ceil(min_sample_s / max(min(once), 1e-6)))
        for _ in range(rounds):
            for key, fn in fns.items():
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn(*args)
                samples[key].append((time.perf_counter() - t0) * 1e3 / calls)
        used = torch.get_num_threads()
    batch = int(args[0].shape[0]) if args and hasattr(args[0], "shape") else 1
    return {k: LatencyStats.from_samples(v, batch_size=batch, threads=used, warmup=1) for k, v in samples.items()}
