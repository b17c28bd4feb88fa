"""Mixed precision: per-layer weight bit widths chosen from each layer's sensitivity under a size or BOPs budget.

Sensitivity of layer ``l`` at ``b`` bits is either the accuracy drop when only that layer's weights are quantized
to ``b`` bits (``criterion="accuracy"``), or HAWQ-V2's second-order estimate (Dong et al. 2020)
``Tr(H_l) / n_l * ||Q_b(W_l) - W_l||^2`` from a Hutchinson trace (``criterion="hessian"``, no evaluation per
option). The allocation minimizes the summed sensitivity subject to the budget, solved exactly (up to a
1/2000 discretization of the budget) as a multiple-choice knapsack by dynamic programming.

Budgets are average bits: ``size`` weighs each layer by its weight count (so ``budget=4`` is the size of a 4-bit
model), ``bops`` by its MACs (bit operations = MACs x weight bits x activation bits, at fixed activation bits).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from effdl.core.config import check_choice, check_range, name_matches
from effdl.core.errors import ConfigError
from effdl.core.modules import swap_module_
from effdl.core.plot import saved_figure
from effdl.core.table import format_table
from effdl.measure.curvature import hessian_trace
from effdl.measure.evaluation import evaluate
from effdl.measure.macs import module_macs
from effdl.quant.config import QuantConfig
from effdl.quant.fold import fold_batchnorm_
from effdl.quant.math import check_bits
from effdl.quant.modules import FakeQuantizer, quant_type_for

__all__ = ["MixedPrecisionResult", "allocate_bits", "mixed_precision", "mixed_precision_config"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class MixedPrecisionResult:
    """Per-layer sensitivities, costs and the chosen bit widths."""

    layers: list[str]
    params: dict[str, int]
    macs: dict[str, int]
    scores: dict[str, dict[int, float]]
    bits: dict[str, int]
    budget: float
    kind: str
    criterion: str
    baseline_accuracy: float | None = None
    hessian_trace: dict[str, float] = dataclasses.field(default_factory=dict)

    def average_bits(self, kind: str | None = None) -> float:
        """Average weight bits of the allocation, weighted by weights (``size``) or MACs (``bops``)."""
        w = self.params if (kind or self.kind) == "size" else self.macs
        total = sum(w[n] for n in self.layers)
        return sum(w[n] * self.bits[n] for n in self.layers) / max(total, 1)

    def to_config(self, base: QuantConfig | None = None) -> QuantConfig:
        """``base`` (default: a plain :class:`QuantConfig`) with this allocation as ``per_layer`` weight bits (and
        the widest of them as ``bits_w``); every other setting of ``base`` is kept."""
        return (base or QuantConfig()).replace(bits_w=max(self.bits.values()), per_layer=dict(self.bits))

    def to_table(self) -> str:
        """Layers with their weights, MACs, sensitivity per option and chosen bits."""
        options = sorted({b for s in self.scores.values() for b in s})
        unit = "acc drop" if self.criterion == "accuracy" else "HAWQ"
        rows = [
            [n, self.params[n], self.macs[n], *(f"{self.scores[n][b]:.4g}" for b in options), self.bits[n]]
            for n in self.layers
        ]
        headers = ["layer", "weights", "MACs", *(f"{unit} @{b}b" for b in options), "bits"]
        return format_table(rows, headers, align="l" + "r" * (len(headers) - 1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for reports)."""
        return {
            "criterion": self.criterion,
            "kind": self.kind,
            "budget": self.budget,
            "average_bits": self.average_bits(),
            "baseline_accuracy": self.baseline_accuracy,
            "layers": [
                {
                    "layer": n,
                    "weights": self.params[n],
                    "macs": self.macs[n],
                    "scores": {str(b): s for b, s in self.scores[n].items()},
                    "hessian_trace": self.hessian_trace.get(n),
                    "bits": self.bits[n],
                }
                for n in self.layers
            ],
        }

    def plot(self, path: str | os.PathLike) -> Path:
        """Saves a bar chart of the chosen bits per layer over each option's sensitivity (needs matplotlib)."""
        size = (max(6, 0.6 * len(self.layers) + 3), 6)
        with saved_figure(path, size=size, nrows=2, sharex=True) as (_, (ax1, ax2)):
            xs = range(len(self.layers))
            ax1.bar(xs, [self.bits[n] for n in self.layers], color="tab:blue")
            ax1.set_ylabel("weight bits")
            ax1.set_title(f"Mixed precision ({self.kind} budget {self.budget:g} avg bits, criterion {self.criterion})")
            for b in sorted({b for s in self.scores.values() for b in s}):
                ys = [max(self.scores[n][b], 1e-12) for n in self.layers]
                ax2.plot(xs, ys, marker="o", label=f"{b} bits")
            ax2.set_yscale("log")
            ax2.set_ylabel("sensitivity" + (" (accuracy drop)" if self.criterion == "accuracy" else " (HAWQ)"))
            ax2.set_xticks(list(xs), self.layers, rotation=45, ha="right", fontsize=8)
            ax2.legend(fontsize=8)
            ax2.grid(alpha=0.3)
        return Path(path)


def allocate_bits(
    scores: dict[str, dict[int, float]], weights: dict[str, int], budget: float, *, resolution: int = 2000
) -> dict[str, int]:
    """The bit width per layer that minimizes the summed score with ``sum(weights * bits) <= budget *
    sum(weights)`` (multiple-choice knapsack by dynamic programming over a budget split into ``resolution`` units;
    costs are rounded up, so the budget always holds).

    Example:
        >>> scores = {"a": {2: 5.0, 8: 0.0}, "b": {2: 0.1, 8: 0.0}}
        >>> allocate_bits(scores, {"a": 100, "b": 100}, budget=5.0)
        {'a': 8, 'b': 2}
    """
    layers = list(scores)
    total_w = sum(weights[n] for n in layers)
    capacity = budget * total_w
    smallest = sum(weights[n] * min(scores[n]) for n in layers)
    if smallest > capacity + 1e-9:
        raise ConfigError(
            f"budget {budget:g} average bits is below the smallest allocation "
            f"({smallest / total_w:.3g} bits with every layer at its fewest bits); raise the budget"
        )
    unit = capacity / resolution
    inf = math.inf
    dp = [0.0] + [inf] * resolution  # dp[c]: least score with cost exactly c units
    choice: list[list[int | None]] = []
    for n in layers:
        new = [inf] * (resolution + 1)
        pick: list[int | None] = [None] * (resolution + 1)
        for b, score in scores[n].items():
            cost = math.ceil(weights[n] * b / unit - 1e-9) if unit > 0 else 0
            for c in range(resolution + 1 - cost):
                if dp[c] < inf and dp[c] + score < new[c + cost]:
                    new[c + cost] = dp[c] + score
                    pick[c + cost] = b
        dp = new
        choice.append(pick)
    best = min(range(resolution + 1), key=lambda c: (dp[c], -c))
    if dp[best] == inf:  # rounding up the costs can exhaust a budget that is just enough; take the fewest bits
        return {n: min(scores[n]) for n in layers}
    bits: dict[str, int] = {}
    c = best
    for n, pick in zip(reversed(layers), reversed(choice), strict=True):
        b = pick[c]
        bits[n] = b
        c -= math.ceil(weights[n] * b / unit - 1e-9) if unit > 0 else 0
    return {n: bits[n] for n in layers}


def _accuracy(model: nn.Module, data: Any) -> float:
    accuracy = evaluate(model, data, batch_size=512)["accuracy"]
    if math.isnan(accuracy):
        raise ConfigError("mixed precision needs labelled evaluation data; got an empty dataset or float targets")
    return accuracy


def _weight_error(w: torch.Tensor, bits: int) -> float:
    q = FakeQuantizer(bits, signed=True, axis=0)
    with torch.no_grad():
        return float(((q(w) - w) ** 2).sum())


def mixed_precision(
    model: nn.Module,
    data: Any,
    *,
    example_inputs: torch.Tensor,
    budget: float = 4.0,
    kind: str = "size",
    bits_options: tuple[int, ...] = (2, 4, 8),
    criterion: str = "accuracy",
    ignore: tuple[str, ...] = (),
    hessian_batches: int = 2,
    progress: bool = False,
) -> MixedPrecisionResult:
    """Measures each layer's sensitivity and allocates weight bits under ``budget`` average bits. ``model`` is
    not changed; apply the result with ``quantize_(model, result.to_config(QuantConfig(bits_a=8)), ...)``.

    Args:
        model: a trained float model.
        data: evaluation data (a Dataset or loader of ``(inputs, targets)``); for ``hessian``, its first
            ``hessian_batches`` batches of 128 are used.
        example_inputs: a batch the model accepts (MACs).
        budget: average weight bits, weighted by weights (``kind="size"``) or MACs (``kind="bops"``).
        bits_options: candidate widths per layer.
        criterion: ``accuracy`` (accuracy drop with that layer alone quantized) or ``hessian`` (HAWQ-V2).
        ignore: layer names or regexes left out (kept at the largest option).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)).eval()
        >>> d = TensorDataset(torch.randn(64, 8), torch.randint(0, 2, (64,)))
        >>> r = mixed_precision(m, d, example_inputs=torch.zeros(1, 8), budget=3.0, bits_options=(2, 4))
        >>> r.average_bits() <= 3.0, sorted(r.bits)
        (True, ['0', '2'])
    """
    check_choice("kind", kind, ("size", "bops"))
    check_choice("criterion", criterion, ("accuracy", "hessian"))
    if not bits_options:
        raise ConfigError("bits_options must list at least one width, e.g. (2, 4, 8)")
    for b in bits_options:
        check_bits(b, "bits_options entry")
    check_range("budget", budget, min(bits_options), max(bits_options), hint=f"use budget={max(bits_options) / 2:g}")
    base = copy.deepcopy(model).eval()
    fold_batchnorm_(base)
    layers = [
        n
        for n, m in base.named_modules()
        if quant_type_for(m) is not None and not any(name_matches(n, p) for p in ignore)
    ]
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no Conv/Linear layer to allocate bits to")
    macs_all = module_macs(base, example_inputs[:1])
    params = {n: base.get_submodule(n).weight.numel() for n in layers}
    macs = {n: int(macs_all.get(n, 0)) or params[n] for n in layers}
    scores: dict[str, dict[int, float]] = {}
    traces: dict[str, float] = {}
    baseline = None
    if criterion == "accuracy":
        baseline = _accuracy(base, data)
        jobs: Any = layers
        if progress:
            from tqdm.auto import tqdm

            jobs = tqdm(layers, desc="layer sensitivity", unit="layer")
        for n in jobs:
            scores[n] = {}
            for b in bits_options:
                trial = copy.deepcopy(base)
                layer = trial.get_submodule(n)
                swap_module_(
                    trial,
                    n,
                    quant_type_for(layer).from_float(
                        layer, weight_quant=FakeQuantizer(b, signed=True, axis=quant_type_for(layer).weight_axis)
                    ),
                )
                scores[n][b] = max(0.0, baseline - _accuracy(trial, data))
    else:
        batches = []
        source = DataLoader(data, batch_size=128) if isinstance(data, Dataset) else data
        for batch in source:
            batches.append(batch)
            if len(batches) >= hessian_batches:
                break
        weights = {n: base.get_submodule(n).weight for n in layers}
        traces = hessian_trace(base, batches, weights)
        for n in layers:
            w = weights[n].detach()
            scores[n] = {b: max(traces[n], 0.0) / w.numel() * _weight_error(w, b) for b in bits_options}
    cost = params if kind == "size" else macs
    bits = allocate_bits(scores, cost, budget)
    result = MixedPrecisionResult(layers, params, macs, scores, bits, budget, kind, criterion, baseline, traces)
    log.info("mixed precision: %s (average %.2f bits)", bits, result.average_bits())
    return result


def mixed_precision_config(
    model: nn.Module, data: Any, config: QuantConfig, budget: float, *, example_inputs: torch.Tensor
) -> tuple[QuantConfig, MixedPrecisionResult]:
    """Allocates per-layer weight bits under ``budget`` average bits (:func:`mixed_precision`, on ``data.test``)
    and returns ``config`` with that allocation, every other setting kept (activation bits, observer, LSQ,
    accumulator, per-channel, ...), and the allocation.

    Example:
        >>> m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)).eval()
        >>> data = [(torch.randn(32, 8), torch.randint(0, 2, (32,)))]
        >>> class Splits:
        ...     test = torch.utils.data.TensorDataset(*data[0])
        >>> cfg, _ = mixed_precision_config(m, Splits(), QuantConfig(accumulator_bits=16), 4.0,
        ...                                 example_inputs=data[0][0])
        >>> cfg.accumulator_bits, sorted(cfg.per_layer)
        (16, ['0', '2'])
    """
    result = mixed_precision(model, data.test, example_inputs=example_inputs, budget=budget, ignore=config.ignore)
    return result.to_config(config), result
