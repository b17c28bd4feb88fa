"""Sharpness of a minimum: epsilon-sharpness (Keskar et al., "On Large-Batch Training for Deep Learning",
ICLR 2017), the curvature of a loss curve at the trained weights, and one report with the Hessian's extreme
eigenvalues and trace."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from effdl.analysis.config import SharpnessConfig
from effdl.analysis.hessian import hessian_spectrum, hessian_trace_total
from effdl.analysis.surface import Surface, restored_weights
from effdl.core.errors import ConfigError
from effdl.core.report import Report
from effdl.measure.evaluation import evaluate, stack_batches

__all__ = ["curve_curvature", "epsilon_sharpness", "sharpness_report"]

log = logging.getLogger(__name__)


def _mean_loss(model: nn.Module, batches: Sequence[tuple], loss_fn: Callable, *, grad: bool) -> float:
    total = sum(len(b[1]) for b in batches)
    value = 0.0
    for x, y in batches:
        loss = loss_fn(model(x), y) * (len(y) / total)
        if grad:
            loss.backward()
        value += float(loss.detach())
    return value


def epsilon_sharpness(
    model: nn.Module,
    batches: Sequence[tuple],
    *,
    epsilon: float = 1e-3,
    steps: int = 10,
    loss_fn: Callable | None = None,
) -> float:
    """Keskar et al.'s sharpness ``100 * (max_{delta in C} L(w + delta) - L(w)) / (1 + L(w))`` over the box
    ``C = {|delta_i| <= epsilon (|w_i| + 1)}`` in the full weight space, maximized by projected sign-gradient
    ascent (``steps`` steps of ``2.5 / steps`` of the box, the largest loss seen kept). The model is evaluated in
    eval mode and its weights are restored bit for bit.

    Example:
        >>> lin = nn.Linear(2, 1, bias=False); x = torch.eye(2); y = torch.zeros(2, 1)
        >>> with torch.no_grad():
        ...     _ = lin.weight.fill_(1.0)
        >>> # L(w) = |w|^2 / 2 = 1; the box reaches w = 1.2, L = 1.44: 100 * 0.44 / 2
        >>> round(epsilon_sharpness(lin, [(x, y)], epsilon=0.1, loss_fn=nn.MSELoss()), 4)
        22.0
    """
    if epsilon <= 0:
        raise ConfigError(f"epsilon must be > 0, got {epsilon}; use epsilon=1e-3")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"{type(model).__name__} has no trainable parameters; sharpness needs weights to move")
    with restored_weights(model):
        model.eval()
        base = [p.detach().clone() for p in params]
        box = [epsilon * (b.abs() + 1) for b in base]
        with torch.no_grad():
            start = _mean_loss(model, batches, loss_fn, grad=False)
        best = start
        for _ in range(steps):
            for p in params:
                p.grad = None
            _mean_loss(model, batches, loss_fn, grad=True)
            with torch.no_grad():
                for p, b, r in zip(params, base, box, strict=True):
                    step = 2.5 / steps * r * p.grad.sign()
                    p.copy_(b + torch.clamp(p - b + step, -r, r))  # project back onto the box
                best = max(best, _mean_loss(model, batches, loss_fn, grad=False))
        for p in params:
            p.grad = None
    return 100.0 * (best - start) / (1.0 + start)


def curve_curvature(surface: Surface, key: str = "train/loss", *, radius: float = 0.25) -> float:
    """Second derivative at 0 of a 1D loss curve, from a least-squares parabola through its points with
    ``|x| <= radius``: one number for "how sharp" a minimum looks along that direction.

    Example:
        >>> x = np.linspace(-1, 1, 21)
        >>> round(curve_curvature(Surface([x], {"train/loss": 3 * x**2 + 0.5})), 6)
        6.0
    """
    if surface.dims != 1:
        raise ConfigError(f"curve_curvature needs a 1D surface, got {surface.dims}D")
    if key not in surface.values:
        raise ConfigError(f"the surface has no {key!r}; it has {sorted(surface.values)}")
    x = surface.axes[0]
    mask = np.abs(x) <= radius
    if mask.sum() < 3:
        raise ConfigError(f"need at least 3 points within |x| <= {radius}; raise the resolution or the radius")
    coef = np.polyfit(x[mask], surface.values[key][mask], 2)
    return float(2 * coef[0])


def sharpness_report(
    model: nn.Module,
    data: Any,
    config: SharpnessConfig | None = None,
    *,
    loss_fn: Callable | None = None,
    model_name: str | None = None,
    dataset: str | None = None,
) -> Report:
    """Measures how sharp the minimum at the model's weights is, on one data split: the loss and accuracy, the
    ``top_k`` largest Hessian eigenvalues, the smallest one and ``|lambda_min / lambda_max|``, the Hessian trace
    (Hutchinson) and epsilon-sharpness. The model is unchanged.

    Args:
        model: the trained network.
        data: a :class:`~effdl.data.DatasetSplits`, a dict of datasets (``config.split`` is read) or a Dataset.
        config: what to measure.
        loss_fn: mean loss of a batch, default cross-entropy.
        model_name, dataset: names recorded in the report.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> ds = TensorDataset(torch.randn(64, 4), torch.randint(0, 3, (64,)))
        >>> r = sharpness_report(net, {"train": ds}, SharpnessConfig(top_k=2, iterations=10, trace_samples=4))
        >>> r.details["lambda_max"] >= r.details["top_eigenvalues"][1]
        True
    """
    config = config or SharpnessConfig()
    if isinstance(data, dict):
        ds = data.get(config.split)
    else:
        ds = getattr(data, config.split, data if isinstance(data, torch.utils.data.Dataset) else None)
    if ds is None:
        raise ConfigError(f"the data has no split {config.split!r}; pass split= one of the splits you have")
    batches = stack_batches(ds, config.batch_size, max_examples=config.max_examples)
    metrics = evaluate(model, batches, loss_fn=loss_fn)
    spectrum = hessian_spectrum(
        model,
        batches,
        top_k=config.top_k,
        method=config.method,
        iterations=config.iterations,
        seed=config.seed,
        loss_fn=loss_fn,
    )
    details: dict[str, Any] = {
        "split": config.split,
        "examples": sum(len(b[1]) for b in batches),
        "loss": metrics["loss"],
        "accuracy": None if math.isnan(metrics["accuracy"]) else metrics["accuracy"],
        "top_eigenvalues": spectrum.top,
        "lambda_max": spectrum.top[0],
        "lambda_min": spectrum.min,
        "eigen_ratio": spectrum.ratio,
        "hvp_calls": spectrum.hvp_calls,
        "weight_norm": float(sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()) ** 0.5),
    }
    if config.trace_samples:
        details["hessian_trace"] = hessian_trace_total(
            model, batches, samples=config.trace_samples, seed=config.seed, loss_fn=loss_fn
        )
    if config.epsilon:
        details["epsilon_sharpness"] = epsilon_sharpness(
            model, batches, epsilon=config.epsilon, steps=config.ascent_steps, loss_fn=loss_fn
        )
    log.info("sharpness: lambda_max %.4g, lambda_min %.4g", spectrum.top[0], spectrum.min)
    return Report(command="sharpness", model=model_name, dataset=dataset, config=config.to_dict(), details=details)
