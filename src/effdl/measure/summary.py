"""The before/after figures of every transforming command: test accuracy plus the profile at a serving batch
size, with the measurement settings in one :class:`MeasureConfig`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from torch import nn

from effdl.core.config import Config, check_range
from effdl.core.report import ModelSummary
from effdl.measure.evaluation import evaluate
from effdl.measure.latency import measure_latency
from effdl.measure.profiler import Profile, profile

__all__ = ["SIZE_ESTIMATORS", "MeasureConfig", "model_size_bytes", "perplexity", "summarize", "summarize_quantized"]

#: ``fn(model) -> bytes | None``: the size of a model stored the way it will be deployed, where that differs from
#: its float state_dict (a family registers one, e.g. packed low-bit weights of a fake-quantized model)
SIZE_ESTIMATORS: list[Callable[[nn.Module], int | None]] = []


def model_size_bytes(model: nn.Module, serialized: int) -> int:
    """The first registered estimate of ``model``'s deployed size, else ``serialized`` (its state_dict's size)."""
    for estimate in SIZE_ESTIMATORS:
        size = estimate(model)
        if size is not None:
            return size
    return serialized


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeasureConfig(Config):
    """How models are timed in reports.

    Attributes:
        batch_size: the serving batch size latency is measured at (and a runtime is chosen for).
        threads: torch threads while timing (None: torch's setting).
        repeats: timed calls per latency measurement.

    Example:
        >>> MeasureConfig(batch_size=32).repeats
        50
    """

    batch_size: int = 1
    threads: int | None = None
    repeats: int = 50

    def validate(self) -> None:
        check_range("batch_size", self.batch_size, 1, hint="use batch_size=1 (or 32 for throughput)")
        check_range("repeats", self.repeats, 1, hint="use repeats=50")
        if self.threads is not None:
            check_range("threads", self.threads, 1, hint="use threads=1, or None for torch's setting")


def summarize(model: nn.Module, data: Any, measure: MeasureConfig | None = None) -> tuple[ModelSummary, Profile]:
    """Test accuracy/loss plus the profile of ``model`` at the measured batch size: ``(ModelSummary, Profile)``.

    Example:
        >>> from effdl.data import get_dataset
        >>> from effdl.models import create_model
        >>> s, p = summarize(create_model("test_mlp"), get_dataset("mnist1d"), MeasureConfig(repeats=2))
        >>> s.params == p.params and 0.0 <= s.accuracy <= 1.0
        True
    """
    measure = measure or MeasureConfig()
    metrics = evaluate(model, data.test)
    prof = profile(model, data.example_inputs(measure.batch_size), threads=measure.threads, repeats=measure.repeats)
    summary = prof.summary(accuracy=metrics["accuracy"], loss=metrics["loss"])
    summary.perplexity = perplexity(data, metrics["loss"])
    summary.size_bytes = model_size_bytes(model, summary.size_bytes)
    return summary, prof


def perplexity(data: Any, loss: float | None) -> float | None:
    """``exp(loss)`` (per token) for a language-model dataset, else None.

    Example:
        >>> from types import SimpleNamespace
        >>> perplexity(SimpleNamespace(task="language-model"), 0.0), perplexity(SimpleNamespace(), 1.0)
        (1.0, None)
    """
    if getattr(data, "task", "classification") != "language-model" or loss is None or not math.isfinite(loss):
        return None
    return math.exp(min(loss, 700.0))


def summarize_quantized(
    model: nn.Module, data: Any, float_summary: ModelSummary, size_bytes: int, measure: MeasureConfig | None = None
) -> ModelSummary:
    """Accuracy, latency and ``size_bytes`` of a model that runs in integer kernels (whose MACs cannot be counted
    by hooks); MACs and parameters are those of the float model it was made from, ``float_summary`` (a quantized
    model does the same multiply-accumulates, in fewer bits)."""
    measure = measure or MeasureConfig()
    metrics = evaluate(model, data.test)
    x = data.example_inputs(measure.batch_size)
    lat = measure_latency(model, x, threads=measure.threads, repeats=measure.repeats)
    return ModelSummary(
        params=float_summary.params,
        macs=float_summary.macs,
        size_bytes=size_bytes,
        accuracy=metrics["accuracy"],
        loss=metrics["loss"],
        perplexity=perplexity(data, metrics["loss"]),
        latency_ms=lat.median_ms,
        latency_iqr_ms=lat.iqr_ms,
        batch_size=lat.batch_size,
        threads=lat.threads,
    )
