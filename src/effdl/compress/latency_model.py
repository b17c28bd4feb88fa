"""A latency model measured on this machine (NetAdapt's lookup table, Yang et al., ECCV 2018): the latency of each
layer alone, at its input shape, in a runtime, measured once and cached; a model's latency is then predicted as the
measured latency of a reference model plus the per-layer differences the table gives (per-call overheads cancel).

Runtimes (:data:`TABLE_RUNTIMES`): ``pytorch`` (eager float: every leaf module is a layer of the table, since each
runs as its own kernel), ``onnxruntime`` (the float ONNX export) and ``onnxruntime-int8`` (effdl's static int8 QDQ
graph); onnxruntime fuses normalization and activations into the Conv/Linear before them, so there only Conv and
Linear layers are in the table and the other operators count as unchanged from the reference.

The table lives in ``latency-<machine>.json`` under ``$EFFDL_CACHE/latency`` (``~/.cache/effdl``), keyed by runtime,
thread count, batch size, layer settings and input shape; the machine key names the CPU, the core count and the
torch and onnxruntime versions, so a table is never reused on another machine or software stack.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effdl.core.errors import ConfigError, UnsupportedError
from effdl.core.io import atomic_write_json
from effdl.core.modules import eval_mode
from effdl.data.base import cache_dir
from effdl.export.onnx import OnnxModel, export_onnx
from effdl.measure.latency import compare_latency
from effdl.quant.config import Int8Config
from effdl.quant.int8 import available_runtimes, convert_int8

__all__ = ["TABLE_RUNTIMES", "LatencyModel", "LatencyTable", "layer_inputs", "runtime_model"]

log = logging.getLogger(__name__)

#: runtimes the table measures layers in
TABLE_RUNTIMES = ("pytorch", "onnxruntime", "onnxruntime-int8")
_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)
_MAX_ENTRIES = 200_000  # a cache file larger than this is not ours (or runaway): start a fresh one


def _check_runtime(runtime: str) -> None:
    if runtime not in TABLE_RUNTIMES:
        raise ConfigError(f"unknown latency runtime {runtime!r}; valid: {', '.join(TABLE_RUNTIMES)}")
    if runtime != "pytorch" and "onnxruntime" not in available_runtimes():
        raise UnsupportedError(f"runtime {runtime!r} needs onnxruntime: pip install 'effdl[onnx]', or use 'pytorch'")


def runtime_model(
    model: nn.Module, runtime: str, example_inputs: torch.Tensor, *, data: Any = None, threads: int | None = None,
    ignore: tuple[str, ...] = (),
) -> Callable[..., Any]:  # fmt: skip
    """``model`` as ``runtime`` runs it: itself (``pytorch``), its ONNX export in onnxruntime, or effdl's static
    int8 model in onnxruntime (``ignore``: layers kept float; ``data``: calibration batches)."""
    _check_runtime(runtime)
    model = model.eval()
    if runtime == "pytorch":
        return model
    if runtime == "onnxruntime":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(model, example_inputs[:2], path)
            return OnnxModel(path, threads=threads)
    config = Int8Config(runtime="onnxruntime", fallback=False, calibration_batches=1, ignore=tuple(ignore))
    return convert_int8(model, config, example_inputs=example_inputs, data=data, threads=threads)


def layer_inputs(model: nn.Module, example_inputs: Any, *, weighted_only: bool = False) -> dict[str, tuple]:
    """``{name: (module, input shape without the batch)}`` of every leaf module the forward pass calls with one
    tensor (only Conv and Linear layers with ``weighted_only``)."""
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    found: dict[str, tuple] = {}

    def hook(name):
        def fn(module, inputs):
            if name not in found and len(inputs) == 1 and isinstance(inputs[0], torch.Tensor):
                found[name] = (module, tuple(inputs[0].shape[1:]))

        return fn

    leaves = [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    if weighted_only:
        leaves = [(n, m) for n, m in leaves if isinstance(m, _WEIGHTED)]
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in leaves]
    try:
        with eval_mode(model), torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return found


def _machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "none"
    text = f"{platform.machine()}|{cpu}|{os.cpu_count()}|torch {torch.__version__}|onnxruntime {ort}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class LatencyTable:
    """Per-layer latencies (ms) measured on this machine, cached on disk.

    Args:
        batch_size: the batch size layers are timed at.
        threads: intra-op threads while timing (default: torch's setting now).
        path: the cache file (default: ``latency-<machine>.json`` under effdl's cache folder); ``None`` with
            ``cache=False`` keeps the table in memory only.
        cache: read and write the cache file.
        rounds: interleaved timing rounds per layer (the median is kept).

    Example:
        >>> t = LatencyTable(batch_size=4, cache=False)
        >>> t.layer_ms(nn.Linear(16, 8), (16,), "pytorch") > 0, len(t)
        (True, 1)
    """

    def __init__(
        self, *, batch_size: int, threads: int | None = None, path: str | os.PathLike | None = None,
        cache: bool = True, rounds: int = 7,
    ) -> None:  # fmt: skip
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.threads = threads or torch.get_num_threads()
        self.rounds = rounds
        self.path = Path(path) if path is not None else (cache_dir() / "latency" / f"latency-{_machine()}.json")
        self.cache = cache
        self.entries: dict[str, float] = self._read() if cache else {}
        self.measured = 0  # layers timed by this object (not found in the cache)
        self._dirty = False

    def __len__(self) -> int:
        return len(self.entries)

    def _read(self) -> dict[str, float]:
        if not self.path.is_file():
            return {}
        try:
            if self.path.stat().st_size > 64 * 2**20:
                raise ValueError("larger than 64 MiB")
            data = json.loads(self.path.read_text())
            entries = data["entries"]
            if not isinstance(entries, dict) or len(entries) > _MAX_ENTRIES:
                raise ValueError("no table of entries")
            return {str(k): float(v) for k, v in entries.items() if isinstance(v, int | float) and v > 0}
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            log.warning("latency table %s is unreadable (%s); measuring afresh", self.path, exc)
            return {}

    def save(self) -> None:
        """Writes the table to its cache file (atomically), when it has new entries."""
        if self.cache and self._dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, {"machine": _machine(), "entries": self.entries})
            self._dirty = False

    def key(self, module: nn.Module, input_shape: tuple, runtime: str) -> str:
        """The table's key of ``module`` run on inputs of ``input_shape`` (no batch) in ``runtime``."""
        return f"{runtime}|t{self.threads}|b{self.batch_size}|{type(module).__name__}({module.extra_repr()})|" + (
            "x".join(str(int(s)) for s in input_shape)
        )

    def layer_ms(self, module: nn.Module, input_shape: tuple, runtime: str) -> float:
        """The latency of ``module`` alone on a batch of inputs of ``input_shape`` in ``runtime`` (from the table,
        or measured now and added to it)."""
        key = self.key(module, input_shape, runtime)
        if key not in self.entries:
            _check_runtime(runtime)
            layer = nn.Sequential(copy.deepcopy(module)).eval()  # weights' values do not change dense kernels' time
            x = torch.randn(self.batch_size, *input_shape, generator=torch.Generator().manual_seed(0))
            fn = runtime_model(layer, runtime, x, threads=self.threads)
            stats = compare_latency({"layer": fn}, x, rounds=self.rounds, min_sample_s=0.005, threads=self.threads)
            self.entries[key] = stats["layer"].median_ms
            self.measured += 1
            self._dirty = True
        return self.entries[key]


class LatencyModel:
    """Predicts the latency of a model derived from ``reference`` (pruned: the same layer names, fewer channels;
    some layers kept float) in ``runtime`` from the table: ``a + b * (sum of its layers' table latencies)``, with
    ``a`` and ``b`` fitted by least squares to whole models measured in the runtime (the reference, and whatever
    :meth:`calibrate` adds, e.g. each point a search explores). Layers timed alone carry their own input and output
    conversions and call overhead, which a whole model pays once; the fit absorbs that. With one measured model,
    ``b = 1`` (the reference plus the table's per-layer differences).

    Args:
        reference: the model the candidates are derived from.
        example_inputs: a batch at the serving batch size.
        runtime: one of :data:`TABLE_RUNTIMES`.
        table: the :class:`LatencyTable` (its batch size must be the example's).
        reference_ms: the reference's measured latency in ``runtime`` (measured now when None).
        data: calibration batches for int8 models.

    Example:
        >>> ref = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
        >>> lm = LatencyModel(ref, torch.randn(8, 32), "pytorch", LatencyTable(batch_size=8, cache=False))
        >>> abs(lm.predict(ref) - lm.reference_ms) < 1e-9
        True
    """

    def __init__(
        self, reference: nn.Module, example_inputs: torch.Tensor, runtime: str, table: LatencyTable, *,
        reference_ms: float | None = None, data: Any = None,
    ) -> None:  # fmt: skip
        _check_runtime(runtime)
        if int(example_inputs.shape[0]) != table.batch_size:
            raise ConfigError(f"the example batch ({example_inputs.shape[0]}) must have the table's batch size "
                              f"({table.batch_size})")  # fmt: skip
        self.runtime, self.table, self.example, self.data = runtime, table, example_inputs, data
        self.samples: list[tuple[float, float]] = []  # (sum of table latencies, measured ms) of whole models
        self.reference_ms = self.calibrate(reference, measured_ms=reference_ms)
        self._reference_sum = self.samples[0][0]

    def measure(self, model: nn.Module, float_layers: tuple[str, ...] = ()) -> float:
        """``model``'s latency (ms, median of interleaved rounds) measured whole in the runtime."""
        fn = runtime_model(copy.deepcopy(model), self.runtime, self.example, data=self.data, threads=self.table.threads,
                           ignore=float_layers)  # fmt: skip
        return compare_latency({"m": fn}, self.example, rounds=11, threads=self.table.threads)["m"].median_ms

    def calibrate(self, model: nn.Module, float_layers: tuple[str, ...] = (), *, measured_ms: float | None = None
                  ) -> float:  # fmt: skip
        """Measures ``model`` whole (unless ``measured_ms`` is given), adds it to the fit and returns the time."""
        ms = float(measured_ms) if measured_ms is not None else self.measure(model, float_layers)
        self.samples.append((sum(self.layers(model, float_layers).values()), ms))
        return ms

    def coefficients(self) -> tuple[float, float]:
        """``(a, b)`` of the fit ``measured = a + b * table sum``."""
        if len(self.samples) < 2:
            s, ms = self.samples[0]
            return ms - s, 1.0
        xs, ys = zip(*self.samples, strict=True)
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mx) ** 2 for x in xs)
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var > 0 else 1.0
        b = max(b, 0.0)  # fewer channels never make the layers slower on average
        return my - b * mx, b

    def layers(self, model: nn.Module, float_layers: tuple[str, ...] = ()) -> dict[str, float]:
        """The table's latency of each layer of ``model`` (``float_layers`` timed in float onnxruntime when the
        runtime is int8)."""
        units = layer_inputs(model, self.example, weighted_only=self.runtime != "pytorch")
        out = {}
        for name, (module, shape) in units.items():
            runtime = "onnxruntime" if self.runtime == "onnxruntime-int8" and name in float_layers else self.runtime
            out[name] = self.table.layer_ms(module, shape, runtime)
        return out

    def predict(self, model: nn.Module, float_layers: tuple[str, ...] = ()) -> float:
        """Predicted latency (ms) of ``model`` in the runtime."""
        a, b = self.coefficients()
        return max(a + b * sum(self.layers(model, float_layers).values()), 1e-6)
