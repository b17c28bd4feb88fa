"""``profile(model, example_inputs)``: parameters, non-zeros, MACs (dense and sparsity-aware), size, peak memory
and CPU latency, per layer and in total."""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from typing import Any

import torch
from torch import nn

from effdl.core.modules import eval_mode
from effdl.core.report import ModelSummary
from effdl.core.table import format_table, human_bytes, human_count
from effdl.measure.latency import LatencyStats, measure_latency, num_threads
from effdl.measure.macs import module_macs
from effdl.measure.memory import MemoryStats, peak_forward_memory
from effdl.measure.size import count_nonzero_params, count_params, serialized_size

__all__ = ["LayerProfile", "Profile", "profile"]


@dataclasses.dataclass
class LayerProfile:
    """Figures of one module; MACs are per example and exclusive of submodules, ``output_shape`` excludes the
    batch dimension, and ``density`` is the share of non-zero entries of the module's ``weight`` (1.0 without one).

    Example:
        >>> LayerProfile("fc", "Linear", 10, 10, 8, 8, 1.0, [2]).density
        1.0
    """

    name: str
    type: str
    params: int
    nonzero_params: int
    macs: int
    sparse_macs: int
    density: float = 1.0
    output_shape: list[int] | None = None
    latency_ms: float | None = None


@dataclasses.dataclass
class Profile:
    """The measurements of one model; render with ``str(profile)`` or :meth:`to_table`, save with :meth:`to_json`.

    MACs are for one example (batch size 1); latency and memory are for the batch size of the example inputs.

    Example:
        >>> p = profile(nn.Sequential(nn.Linear(4, 2)), torch.zeros(1, 4), latency=False)
        >>> p.params, p.macs
        (10, 8)
    """

    model: str
    input_shape: list[int]
    params: int
    nonzero_params: int
    macs: int
    sparse_macs: int
    size_bytes: int
    memory: MemoryStats
    latency: LatencyStats | None
    layers: list[LayerProfile]

    def summary(self, *, accuracy: float | None = None, loss: float | None = None) -> ModelSummary:
        """The headline figures as a :class:`~effdl.core.ModelSummary` (what report.json stores)."""
        lat = self.latency
        return ModelSummary(
            params=self.params,
            nonzero_params=self.nonzero_params,
            macs=self.macs,
            sparse_macs=self.sparse_macs,
            size_bytes=self.size_bytes,
            peak_memory_bytes=self.memory.peak_bytes,
            accuracy=accuracy,
            loss=loss,
            latency_ms=lat.median_ms if lat else None,
            latency_iqr_ms=lat.iqr_ms if lat else None,
            batch_size=lat.batch_size if lat else self.input_shape[0],
            threads=lat.threads if lat else torch.get_num_threads(),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with every figure and the per-layer rows."""
        d = dataclasses.asdict(self)
        d["memory"]["peak_bytes"] = self.memory.peak_bytes
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """Inverse of :meth:`to_dict` (e.g. the profile stored in a report.json)."""
        d = dict(data)
        memory = {k: v for k, v in d.pop("memory").items() if k != "peak_bytes"}
        latency = d.pop("latency")
        layers = d.pop("layers")
        return cls(
            **d,
            memory=MemoryStats(**memory),
            latency=LatencyStats(**latency) if latency else None,
            layers=[LayerProfile(**row) for row in layers],
        )

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2)

    def to_table(self, *, all_layers: bool = False) -> str:
        """Per-layer table followed by totals; layers with neither parameters nor MACs are hidden unless asked."""
        with_lat = any(layer.latency_ms is not None for layer in self.layers)
        rows = []
        for layer in self.layers:
            if not all_layers and not layer.params and not layer.macs:
                continue
            row = [
                layer.name or "(root)",
                layer.type,
                human_count(layer.params),
                f"{100 * layer.density:.1f}%",
                human_count(layer.macs),
                "x".join(map(str, layer.output_shape or [])) or "-",
            ]
            if with_lat:
                row.append(f"{layer.latency_ms:.4f}" if layer.latency_ms is not None else "-")
            rows.append(row)
        headers = ["layer", "type", "params", "density", "MACs", "output"] + (["ms"] if with_lat else [])
        table = format_table(rows, headers, align="ll" + "r" * (len(headers) - 2))
        lines = [
            f"{self.model}: input {tuple(self.input_shape)}",
            table,
            f"total: {human_count(self.params)} params ({human_count(self.nonzero_params)} non-zero), "
            f"{human_count(self.macs)} MACs/example ({human_count(self.sparse_macs)} sparse), "
            f"{human_bytes(self.size_bytes)} serialized, peak forward memory {human_bytes(self.memory.peak_bytes)}",
        ]
        if self.latency:
            lat = self.latency
            lines.append(
                f"latency: {lat.median_ms:.3f} ms median (IQR {lat.iqr_ms:.3f} ms, {lat.repeats} runs) at batch "
                f"{lat.batch_size}, {lat.threads} thread(s)"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


def profile(
    model: nn.Module,
    example_inputs: Any,
    *,
    latency: bool = True,
    layer_latency: bool = False,
    warmup: int = 10,
    repeats: int = 50,
    threads: int | None = None,
) -> Profile:
    """Measures ``model`` on ``example_inputs`` (a tensor or tuple of tensors with a batch dimension).

    Args:
        model: any module; it is put in eval mode for the measurements and restored after.
        example_inputs: inputs of the batch size to time; MACs are counted on the first example alone.
        latency: time the whole forward pass (median and spread over ``repeats`` runs after ``warmup``).
        layer_latency: also time each leaf module (forward hooks; adds a little overhead per layer).
        warmup, repeats: timing runs.
        threads: torch intra-op threads while timing (``None``: the current setting).

    Example:
        >>> p = profile(nn.Conv1d(1, 4, 3), torch.zeros(8, 1, 10), repeats=3, threads=1)
        >>> p.macs, p.latency.batch_size, p.latency.threads
        (96, 8, 1)
    """
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    first = tuple(a[:1] if isinstance(a, torch.Tensor) and a.dim() > 0 else a for a in args)
    macs = module_macs(model, first)
    shapes = _output_shapes(model, first)
    layers = []
    for name, mod in model.named_modules():
        own = dict(mod.named_parameters(recurse=False))
        nonzeros = {k: int(torch.count_nonzero(p.detach())) for k, p in own.items()}
        params = sum(p.numel() for p in own.values())
        weight = getattr(mod, "weight", None)  # may be a plain tensor, e.g. weight_orig * mask under nn.utils.prune
        density = 1.0
        if isinstance(weight, torch.Tensor) and weight.numel():
            nz = nonzeros["weight"] if "weight" in nonzeros else int(torch.count_nonzero(weight.detach()))
            density = nz / weight.numel()
        nonzero = sum(nonzeros.values())
        layers.append(
            LayerProfile(
                name,
                type(mod).__name__,
                params,
                nonzero,
                macs.get(name, 0),
                round(macs.get(name, 0) * density),
                density,
                shapes.get(name),
            )
        )
    if layer_latency:
        times = _layer_latency(model, args, warmup=warmup, repeats=repeats, threads=threads)
        for layer in layers:
            layer.latency_ms = times.get(layer.name)
    lat = measure_latency(model, args, warmup=warmup, repeats=repeats, threads=threads) if latency else None
    return Profile(
        model=type(model).__name__,
        input_shape=list(args[0].shape) if isinstance(args[0], torch.Tensor) else [],
        params=count_params(model),  # from the model, so that tied parameters count once
        nonzero_params=count_nonzero_params(model),
        macs=sum(layer.macs for layer in layers),
        sparse_macs=sum(layer.sparse_macs for layer in layers),
        size_bytes=serialized_size(model),
        memory=peak_forward_memory(model, args),
        latency=lat,
        layers=layers,
    )


def _leaves(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]


def _output_shapes(model: nn.Module, args: tuple) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}

    def hook(name):
        def fn(_mod, _inp, out):
            if isinstance(out, torch.Tensor):
                shapes[name] = list(out.shape[1:])

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in _leaves(model)]
    try:
        with eval_mode(model), torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return shapes


def _layer_latency(
    model: nn.Module, args: tuple, *, warmup: int, repeats: int, threads: int | None
) -> dict[str, float]:
    samples: dict[str, list[float]] = {}
    starts: dict[str, float] = {}

    def pre(name):
        def fn(_mod, _inp):
            starts[name] = time.perf_counter()

        return fn

    def post(name):
        def fn(_mod, _inp, _out):
            samples.setdefault(name, []).append((time.perf_counter() - starts[name]) * 1e3)

        return fn

    leaves = _leaves(model)
    with eval_mode(model), num_threads(threads), torch.inference_mode():
        for _ in range(warmup):
            model(*args)
        handles = [m.register_forward_pre_hook(pre(n)) for n, m in leaves]
        handles += [m.register_forward_hook(post(n)) for n, m in leaves]
        try:
            for _ in range(repeats):
                model(*args)
        finally:
            for h in handles:
                h.remove()
    return {name: statistics.median(v) for name, v in samples.items()}
