"""Which layer is to blame when quantization costs accuracy, and PTQ that keeps the blamed layers in float.

:func:`diagnose_quantization` quantizes a copy of the model as a config says (techniques included) and measures, per
quantized layer in execution order: the SQNR of the model's output with *only* that layer quantized, and with every
layer up to it quantized (cumulative); its weight and input ranges; and its outlier input channels (absolute maximum
above ``outlier_ratio`` times the median channel's), the usual cause of activation-quantization loss in
transformers.

:func:`accuracy_controlled_config` meets a metric tolerance: it keeps the layers with the lowest SQNR alone in float,
one at a time, until the quantized model (the simulation, which the onnxruntime int8 runtime reproduces) is within
tolerance, and returns the config with those layers in ``ignore``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effdl.core.config import check_range
from effdl.core.errors import ConfigError
from effdl.core.modules import eval_mode
from effdl.core.plot import saved_figure
from effdl.core.table import format_table
from effdl.measure.activations import calibration_batches
from effdl.measure.capture import flatten_tensors
from effdl.measure.evaluation import sqnr_db
from effdl.quant.config import Int8Config, QuantConfig
from effdl.quant.modules import FakeQuantizer, QuantLayer

__all__ = [
    "AccuracyControl",
    "LayerDiagnosis",
    "QuantDiagnosis",
    "accuracy_controlled_config",
    "diagnose_quantization",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LayerDiagnosis:
    """One quantized layer: output SQNR alone and cumulative (dB), weight and input ranges, outlier channels."""

    layer: str
    kind: str
    sqnr_alone_db: float
    sqnr_cumulative_db: float
    weight_range: tuple[float, float]
    input_range: tuple[float, float] | None
    outlier_channels: list[int]
    input_channels: int


@dataclasses.dataclass
class QuantDiagnosis:
    """The per-layer quantization report; ``to_table()``, ``plot(path)`` and ``to_dict()``."""

    config: dict[str, Any]
    layers: list[LayerDiagnosis]
    sqnr_all_db: float

    def worst(self, n: int = 3) -> list[str]:
        """The ``n`` layers whose quantization alone hurts the output most."""
        return [d.layer for d in sorted(self.layers, key=lambda d: d.sqnr_alone_db)[:n]]

    def to_table(self) -> str:
        """One row per layer, in execution order."""
        rows = [
            [
                d.layer,
                d.kind,
                _db(d.sqnr_alone_db),
                _db(d.sqnr_cumulative_db),
                f"[{d.weight_range[0]:.3g}, {d.weight_range[1]:.3g}]",
                "-" if d.input_range is None else f"[{d.input_range[0]:.3g}, {d.input_range[1]:.3g}]",
                f"{len(d.outlier_channels)}/{d.input_channels}" if d.input_channels else "-",
            ]
            for d in self.layers
        ]
        headers = ["layer", "type", "SQNR alone dB", "SQNR cumulative dB", "weights", "inputs", "outlier channels"]
        return format_table(rows, headers, align="llrrllr") + f"\nall layers quantized: {_db(self.sqnr_all_db)} dB"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for reports)."""
        return {
            "config": self.config,
            "sqnr_all_db": _finite(self.sqnr_all_db),
            "layers": [
                dataclasses.asdict(d)
                | {"sqnr_alone_db": _finite(d.sqnr_alone_db), "sqnr_cumulative_db": _finite(d.sqnr_cumulative_db)}
                for d in self.layers
            ],
        }

    def plot(self, path: str | os.PathLike) -> Path:
        """Saves SQNR alone and cumulative per layer (needs matplotlib)."""
        names = [d.layer for d in self.layers]
        size = (max(7, 0.35 * len(names) + 3), 4.5)
        with saved_figure(path, size=size) as (_, ax):
            xs = range(len(names))
            ax.bar(xs, [min(d.sqnr_alone_db, 99) for d in self.layers], color="tab:blue", label="only this layer")
            ax.plot(xs, [min(d.sqnr_cumulative_db, 99) for d in self.layers], color="tab:red", marker="o",
                    label="this layer and all before it")  # fmt: skip
            ax.set_ylabel("output SQNR (dB)")
            ax.set_title("Quantization error per layer (higher is better)")
            ax.set_xticks(list(xs), names, rotation=60, ha="right", fontsize=7)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3, axis="y")
        return Path(path)


def _db(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.1f}"


def _finite(v: float) -> float | None:
    return None if math.isinf(v) or math.isnan(v) else v


def _quant_config(config: QuantConfig | Int8Config) -> QuantConfig:
    if isinstance(config, Int8Config):
        return config.quant_config()
    if isinstance(config, QuantConfig):
        return config
    raise ConfigError(f"diagnosis takes a QuantConfig or an Int8Config, got {type(config).__name__}")


def _quantized_copy(model: nn.Module, config: QuantConfig, example_inputs: Any, data: Any, batches: int) -> nn.Module:
    from effdl.quant.api import quantize_

    sim = copy.deepcopy(model).eval()
    quantize_(sim, config, example_inputs=example_inputs, data=data, calibration_batches=batches)
    return sim


def _execution_order(model: nn.Module, layers: dict[str, QuantLayer], args: tuple) -> list[str]:
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda _m, _a, n=n: order.append(n)) for n, m in layers.items()]
    try:
        with torch.no_grad(), eval_mode(model):
            model(*args)
    finally:
        for h in handles:
            h.remove()
    seen: set[str] = set()
    return [n for n in order if not (n in seen or seen.add(n))] + [n for n in layers if n not in order]


def _set_enabled(layers: dict[str, QuantLayer], on: set[str]) -> None:
    for name, layer in layers.items():
        for q in layer.modules():
            if isinstance(q, FakeQuantizer):
                q.enabled = name in on


def _output_sqnr(model: nn.Module, batches: list[tuple], references: list[torch.Tensor]) -> float:
    with torch.no_grad(), eval_mode(model):
        outs = [flatten_tensors(model(*args))[0] for args in batches]
    return sqnr_db(torch.cat([r.reshape(-1) for r in references]), torch.cat([o.reshape(-1) for o in outs]))


def diagnose_quantization(
    model: nn.Module,
    config: QuantConfig | Int8Config | None = None,
    *,
    example_inputs: Any,
    data: Any = None,
    batches: int = 8,
    eval_batches: int = 2,
    outlier_ratio: float = 6.0,
) -> QuantDiagnosis:
    """Per-layer quantization report of ``model`` under ``config`` (default W8A8); ``model`` is not changed.

    Args:
        model: the float model.
        config: a :class:`QuantConfig` or an :class:`Int8Config` (its simulation is diagnosed).
        example_inputs: a batch the model accepts.
        data: calibration batches (the first ``eval_batches`` of them also measure the SQNR).
        batches: calibration batches.
        eval_batches: batches the SQNR is measured on.
        outlier_ratio: an input channel is an outlier when its absolute maximum exceeds this multiple of the
            median channel's.

    Example:
        >>> m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> x = torch.randn(32, 8)
        >>> d = diagnose_quantization(m, QuantConfig(bits_w=4, bits_a=8), example_inputs=x)
        >>> [row.layer for row in d.layers], d.sqnr_all_db <= d.layers[0].sqnr_alone_db
        (['0', '2'], True)
    """
    qconfig = _quant_config(config or QuantConfig())
    check_range("outlier_ratio", outlier_ratio, 1.0, low_open=True, hint="use outlier_ratio=6")
    calib = data if data is not None else [example_inputs]
    sim = _quantized_copy(model, qconfig, example_inputs, calib, batches)
    evals = list(calibration_batches(calib, eval_batches))
    with torch.no_grad(), eval_mode(model):
        references = [flatten_tensors(model(*args))[0] for args in evals]
    layers = {n: m for n, m in sim.named_modules() if isinstance(m, QuantLayer)}
    order = _execution_order(sim, layers, evals[0])
    channel_max = _input_channel_max(sim, layers, evals)
    rows: list[LayerDiagnosis] = []
    try:
        for i, name in enumerate(order):
            _set_enabled(layers, {name})
            alone = _output_sqnr(sim, evals, references)
            _set_enabled(layers, set(order[: i + 1]))
            cumulative = _output_sqnr(sim, evals, references)
            layer = layers[name]
            w = layer.weight.detach()
            iq = layer.input_quant
            observer = getattr(iq, "observer", None)
            in_range = None
            if observer is not None and observer.initialized:
                in_range = (float(observer.min_val.min()), float(observer.max_val.max()))
            cmax = channel_max.get(name)
            outliers: list[int] = []
            if cmax is not None and cmax.numel() > 1:
                median = float(cmax.median())
                outliers = [int(c) for c in torch.nonzero(cmax > outlier_ratio * max(median, 1e-12)).flatten()]
            rows.append(LayerDiagnosis(
                layer=name, kind=type(layer).__name__, sqnr_alone_db=alone, sqnr_cumulative_db=cumulative,
                weight_range=(float(w.min()), float(w.max())), input_range=in_range, outlier_channels=outliers,
                input_channels=0 if cmax is None else int(cmax.numel()),
            ))  # fmt: skip
    finally:
        _set_enabled(layers, set(layers))
    return QuantDiagnosis(config=qconfig.to_dict(), layers=rows, sqnr_all_db=_output_sqnr(sim, evals, references))


def _input_channel_max(model: nn.Module, layers: dict[str, QuantLayer], batches: list[tuple]) -> dict[str, Any]:
    """Absolute maximum of each input channel of each layer (channel axis 1 for convolutions, last otherwise)."""
    out: dict[str, torch.Tensor] = {}

    def hook(name, layer):
        axis = -1 if layer.channel_axis == -1 else 1

        def record(_m, args):
            x = args[0].detach()
            if not torch.is_floating_point(x) or x.dim() < 2:
                return
            a = x.abs().transpose(0, axis % x.dim()).reshape(x.shape[axis], -1).amax(dim=1)
            out[name] = a if name not in out else torch.maximum(out[name], a)

        return record

    handles = [m.register_forward_pre_hook(hook(n, m)) for n, m in layers.items()]
    try:
        with torch.no_grad(), eval_mode(model):
            for args in batches:
                model(*args)
    finally:
        for h in handles:
            h.remove()
    return out


@dataclasses.dataclass
class AccuracyControl:
    """What accuracy-controlled PTQ did: the config to use, the layers kept float (most sensitive first), the
    metric of the float model and after each step, and the share of weights left in float (the cost)."""

    config: QuantConfig | Int8Config
    kept_float: list[str]
    baseline: float
    history: list[tuple[int, float]]
    float_weight_share: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for reports)."""
        return {"config": self.config.to_dict(), "kept_float": self.kept_float, "baseline": self.baseline,
                "history": [list(h) for h in self.history], "float_weight_share": self.float_weight_share}  # fmt: skip

    def to_table(self) -> str:
        """The metric after each layer kept float."""
        rows = [[k, "-" if k == 0 else self.kept_float[k - 1], f"{v:.4f}"] for k, v in self.history]
        return format_table(rows, ["layers float", "last kept float", "metric"], align="rlr") + (
            f"\nfloat model: {self.baseline:.4f}; weights left in float: {100 * self.float_weight_share:.1f}%"
        )


def accuracy_controlled_config(
    model: nn.Module,
    config: QuantConfig | Int8Config,
    *,
    metric: Callable[[nn.Module], float],
    tolerance: float,
    example_inputs: Any,
    data: Any = None,
    batches: int = 8,
    max_float: float = 0.5,
) -> AccuracyControl:
    """The config (every other setting kept) whose quantized model scores within ``tolerance`` of the float model
    on ``metric`` (higher is better, e.g. accuracy on held-out data), found by keeping the layers with the lowest
    alone-SQNR (:func:`diagnose_quantization`) in float one at a time. ``model`` is not changed.

    Args:
        model: the float model.
        config: the :class:`QuantConfig` or :class:`Int8Config` to start from.
        metric: ``metric(model) -> float``, higher is better.
        tolerance: the largest drop of ``metric`` allowed (same units, e.g. 0.005 for half a point of accuracy).
        example_inputs: a batch the model accepts.
        data: calibration batches.
        batches: calibration batches.
        max_float: the largest share of quantized layers that may be kept float before giving up.

    Raises:
        ConfigError: the tolerance is not met with ``max_float`` of the layers in float (the message gives the
            best metric reached).

    Example:
        >>> m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x = torch.randn(64, 8)
        >>> ref = m(x).detach()
        >>> score = lambda q: -float((q(x) - ref).abs().max())
        >>> r = accuracy_controlled_config(m, QuantConfig(bits_w=2, bits_a=2), metric=score, tolerance=1e-6,
        ...                                example_inputs=x, max_float=1.0)
        >>> sorted(r.kept_float)
        ['0', '2']
    """
    check_range("tolerance", tolerance, 0.0, hint="use tolerance=0.005 (half a point of accuracy)")
    check_range("max_float", max_float, 0.0, 1.0, hint="use max_float=0.5")
    qconfig = _quant_config(config)
    calib = data if data is not None else [example_inputs]
    diagnosis = diagnose_quantization(model, qconfig, example_inputs=example_inputs, data=calib, batches=batches)
    ranking = [d.layer for d in sorted(diagnosis.layers, key=lambda d: d.sqnr_alone_db)]
    sizes = {d.layer: 0 for d in diagnosis.layers}
    for name in sizes:
        sizes[name] = model.get_submodule(name).weight.numel()
    with torch.no_grad(), eval_mode(model):
        baseline = float(metric(model))
    limit = math.floor(max_float * len(ranking) + 1e-9)
    history: list[tuple[int, float]] = []
    kept: list[str] = []
    best = -math.inf
    for k in range(limit + 1):
        kept = ranking[:k]
        trial = qconfig.replace(ignore=(*qconfig.ignore, *kept))
        if k < len(ranking):
            sim = _quantized_copy(model, trial, example_inputs, calib, batches)
        else:  # every layer float: the float model itself
            sim = model
        with torch.no_grad(), eval_mode(sim):
            value = float(metric(sim))
        history.append((k, value))
        best = max(best, value)
        log.info("accuracy control: %d layers float, metric %.4f (float %.4f)", k, value, baseline)
        if baseline - value <= tolerance:
            ignore = (*config.ignore, *kept)
            share = sum(sizes[n] for n in kept) / max(sum(sizes.values()), 1)
            return AccuracyControl(config.replace(ignore=ignore), kept, baseline, history, share)
    raise ConfigError(
        f"the tolerance {tolerance} cannot be met: with the {limit} most sensitive of {len(ranking)} layers in float "
        f"the best metric reached was {best:.4f} against {baseline:.4f} for the float model (a drop of "
        f"{baseline - best:.4f}); raise max_float (now {max_float}), add PTQ techniques, or use QAT"
    )
