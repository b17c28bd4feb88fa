"""Real int8 execution on the CPU: effdl's calibrated fake-quant model lowered to an onnxruntime QDQ model
(``onnxruntime``: the same scales and integer weights, so what runs is what was simulated, with every PTQ technique
the config asks for), onnxruntime dynamic int8 (``onnxruntime-dynamic``), or torch's deprecated x86/fbgemm FX path
(``torch-ao``, a fallback effdl can live without: it calibrates on its own and takes no techniques).

``runtime="auto"`` builds each available static runtime and times them with fp32 on the batch shape the user
deploys at; fp32 is returned when no int8 runtime is faster (``fallback``), and a runtime under ``min_sqnr_db`` is
rejected. torchao's PT2E path was left out: it needs inductor freezing on CPU and failed on a Conv1d -> Flatten ->
Linear net here.

Saved files: torch-ao models as safetensors (int8 weights with their scales, the float biases and every
activation scale; the float architecture is rebuilt from the model registry and lowered again, then the saved
integers are put back), onnxruntime models as the ``.onnx`` file itself, the fp32 fallback as a safetensors state
dict. None of them runs code on load.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effdl.core.checkpoint import load_checkpoint, save_checkpoint
from effdl.core.errors import CheckpointError, ConfigError, UnsupportedError
from effdl.core.io import atomic_write_bytes, atomic_write_json
from effdl.core.report import Report
from effdl.core.transform import Applied, TransformContext, register_transform
from effdl.measure.capture import flatten_tensors
from effdl.measure.profiler import profile
from effdl.models.base import check_example_inputs, model_spec
from effdl.models.checkpoint import checkpoint_structure, model_from_spec, structure_records
from effdl.models.structure import restore_structure_
from effdl.quant.api import calibration_inputs
from effdl.quant.config import Int8Config

__all__ = ["Int8Model", "available_runtimes", "convert_int8", "load_int8"]

log = logging.getLogger(__name__)

_FORMAT = "effdl.int8"


def _ao_engine() -> str | None:
    """torch's x86/fbgemm quantized engine, if this torch has one and still ships the FX graph-mode API (deprecated
    in torch 2.13; a torch without it simply loses this runtime)."""
    try:  # looked up, not imported: nothing new is built on torch.ao; this only says whether the old path exists
        if importlib.util.find_spec("torch.ao.quantization.quantize_fx") is None:
            return None
    except (ImportError, ValueError):
        return None
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm"):
        if engine in engines:
            return engine
    return None


def _has_onnxruntime() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def available_runtimes() -> list[str]:
    """The int8 runtimes usable on this machine (``torch-ao`` needs torch's x86 or fbgemm quantized engine and its
    FX graph-mode API, ``onnxruntime`` the onnx and onnxruntime packages).

    Example:
        >>> set(available_runtimes()) <= {"torch-ao", "onnxruntime", "onnxruntime-dynamic"}
        True
    """
    found = []
    if _ao_engine() is not None:
        found.append("torch-ao")
    if _has_onnxruntime():
        found += ["onnxruntime", "onnxruntime-dynamic"]
    return found


def _require_runtime(runtime: str) -> None:
    if runtime in available_runtimes():
        return
    if runtime == "torch-ao":
        raise UnsupportedError(
            "the torch-ao int8 runtime needs torch's x86 or fbgemm quantized engine, but this torch build offers "
            f"{torch.backends.quantized.supported_engines}; use runtime='onnxruntime' (pip install 'effdl[onnx]')"
        )
    raise UnsupportedError(
        "the onnxruntime int8 runtime needs the onnx and onnxruntime packages; install them with "
        "pip install 'effdl[onnx]', or use runtime='torch-ao'"
    )


class Int8Model(nn.Module):
    """A model that runs in int8 kernels; call it like the float model (tensors in, a tensor out).

    Attributes:
        runtime: ``torch-ao``, ``onnxruntime``, ``onnxruntime-dynamic``, or ``fp32`` (the float model, deployed
            because no int8 runtime was faster or accurate enough; see :attr:`reason`).
        selection: for ``runtime="auto"``, the median latency (ms) of each runtime and of fp32 on the batch shape
            used to choose.
        skipped: runtimes that could not take the model (or missed ``min_sqnr_db``), with why.
        accuracy: SQNR (dB) of each built runtime against fp32 on the first calibration batch.
        reason: why this runtime was deployed.
        meta: what was saved with the model; ``meta["lowering"]`` (onnxruntime) tells how effdl's simulation was
            lowered: the techniques, the layers requantized, the layers left in float, and the agreement of the
            runtime with the simulation in quantization steps.
    """

    def __init__(self, runtime: str, impl: Any, meta: dict[str, Any]) -> None:
        super().__init__()
        self.runtime = runtime
        self.meta = meta
        self.selection: dict[str, float] = {}
        self.skipped: dict[str, str] = {}
        self.accuracy: dict[str, float] = {}
        self.reason = ""
        if runtime in ("torch-ao", "fp32"):
            self.graph = impl
            self._session = None
        else:
            self.graph = None
            self._onnx = impl
            self._session = _session(impl, meta.get("threads"))
            self._inputs = [i.name for i in self._session.get_inputs()]  # looked up once: calls are microseconds

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.graph is not None:
            out = self.graph(*xs)
            return out if isinstance(out, torch.Tensor) else flatten_tensors(out)[0]
        feeds = {name: x.detach().cpu().numpy() for name, x in zip(self._inputs, xs, strict=True)}
        return torch.from_numpy(self._session.run(None, feeds)[0])

    def size_bytes(self) -> int:
        """Bytes of the saved model file."""
        if self.runtime.startswith("onnxruntime"):
            return len(self._onnx)
        with tempfile.TemporaryDirectory() as tmp:
            return self.save(Path(tmp, "model")).stat().st_size

    def _meta(self) -> dict[str, Any]:
        return {"kind": _FORMAT, **self.meta}

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the model atomically: ``.onnx`` for onnxruntime (with a ``.onnx.json`` of metadata beside it),
        ``.safetensors`` for torch-ao (the suffix is set accordingly). Reload with :func:`load_int8`."""
        path = Path(path).with_suffix(".onnx" if self.runtime.startswith("onnxruntime") else ".safetensors")
        if self.runtime.startswith("onnxruntime"):
            atomic_write_bytes(path, self._onnx)
            atomic_write_json(path.with_name(path.name + ".json"), self._meta())
        elif self.runtime == "fp32":
            save_checkpoint(path, {k: v.contiguous() for k, v in self.graph.state_dict().items()}, self._meta())
        else:
            save_checkpoint(path, _ao_state(self.graph), self._meta())
        return path


def _session(model_bytes: bytes, threads: int | None, *, basic: bool = False):
    from effdl.export.onnx import onnx_session

    return onnx_session(model_bytes, threads, optimization="basic" if basic else "all")


# --------------------------------------------------------------------------------------------------------------
# torch-ao (FX graph mode, x86 / fbgemm kernels)


def _qconfig_mapping(config: Int8Config):
    from torch.ao.quantization import QConfig, QConfigMapping, get_default_qconfig_mapping
    from torch.ao.quantization.observer import (
        HistogramObserver,
        MinMaxObserver,
        PerChannelMinMaxObserver,
        default_weight_observer,
    )

    engine = _ao_engine()
    if config.observer == "histogram" and config.per_channel:
        return get_default_qconfig_mapping(engine)
    act = (HistogramObserver if config.observer == "histogram" else MinMaxObserver).with_args(reduce_range=True)
    weight = (
        PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        if config.per_channel
        else default_weight_observer
    )
    base = get_default_qconfig_mapping(engine)  # keeps torch's fixed-qparams settings for sigmoid/tanh etc.
    return base.set_global(QConfig(activation=act, weight=weight)) if isinstance(base, QConfigMapping) else base


@contextlib.contextmanager
def _quiet():
    """torch.ao warns that it is deprecated on every call; onnxruntime's quantizer logs to the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _prepare_ao(model: nn.Module, config: Int8Config, example: torch.Tensor):
    from torch.ao.quantization.quantize_fx import prepare_fx

    torch.backends.quantized.engine = _ao_engine()
    try:
        return prepare_fx(copy.deepcopy(model).eval(), _qconfig_mapping(config), (example,))
    except Exception as exc:
        raise UnsupportedError(
            f"torch.ao could not prepare {type(model).__name__} for int8 ({type(exc).__name__}: {exc}); the model "
            "must be traceable by torch.fx; try runtime='onnxruntime'"
        ) from exc


def _build_ao(model: nn.Module, config: Int8Config, example: torch.Tensor, data: Any) -> nn.Module:
    if not isinstance(example, torch.Tensor):
        raise UnsupportedError("the torch-ao runtime takes models with one input tensor; use runtime='onnxruntime'")
    from torch.ao.quantization.quantize_fx import convert_fx

    with _quiet():
        prepared = _prepare_ao(model, config, example)
        with torch.no_grad():
            for args in calibration_inputs(data, config.calibration_batches):
                prepared(*args)
        return convert_fx(prepared)


def _weighted(graph: nn.Module):
    """Quantized modules with packed weights (a Linear's inner ``_packed_params`` is reached through its owner)."""
    for name, mod in graph.named_modules():
        if hasattr(mod, "_weight_bias") and hasattr(mod, "set_weight_bias") and not name.endswith("_packed_params"):
            yield name, mod


def _ao_state(graph: nn.Module) -> dict[str, torch.Tensor]:
    """int8 weights (int_repr), their scales and zero points, float biases, output and activation qparams."""
    out: dict[str, torch.Tensor] = {}
    for name, mod in _weighted(graph):
        w, b = mod._weight_bias()
        out[f"{name}.weight_int8"] = w.int_repr().contiguous()
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            out[f"{name}.weight_scales"] = w.q_per_channel_scales().double().contiguous()
            out[f"{name}.weight_zero_points"] = w.q_per_channel_zero_points().long().contiguous()
            out[f"{name}.weight_axis"] = torch.tensor(w.q_per_channel_axis())
        else:
            out[f"{name}.weight_scales"] = torch.tensor([w.q_scale()], dtype=torch.float64)
            out[f"{name}.weight_zero_points"] = torch.tensor([w.q_zero_point()])
        if b is not None:
            out[f"{name}.bias"] = b.detach().clone().contiguous()
    for name, mod in graph.named_modules():
        if hasattr(mod, "scale") and hasattr(mod, "zero_point") and not isinstance(mod.scale, torch.Tensor):
            out[f"{name}.out_scale"] = torch.tensor(float(mod.scale))
            out[f"{name}.out_zero_point"] = torch.tensor(int(mod.zero_point))
    for name, buf in graph.named_buffers():
        out[f"buffer.{name}"] = buf.detach().clone().contiguous()
    return out


def _restore_ao(graph: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = set(_ao_state(graph))
    if expected != set(state):
        missing, extra = sorted(expected - set(state))[:5], sorted(set(state) - expected)[:5]
        raise CheckpointError(
            f"the int8 checkpoint does not fit the model rebuilt from its spec (missing {missing}, unexpected "
            f"{extra}); it was saved from another architecture or effdl version"
        )
    for name, mod in _weighted(graph):
        ints = state[f"{name}.weight_int8"]
        scales, zps = state[f"{name}.weight_scales"], state[f"{name}.weight_zero_points"]
        if f"{name}.weight_axis" in state:
            axis = int(state[f"{name}.weight_axis"])
            w = torch._make_per_channel_quantized_tensor(ints, scales.double(), zps, axis)
        else:
            w = torch._make_per_tensor_quantized_tensor(ints, float(scales[0]), int(zps[0]))
        mod.set_weight_bias(w, state.get(f"{name}.bias"))
    for name, mod in graph.named_modules():
        if f"{name}.out_scale" in state:
            mod.scale = float(state[f"{name}.out_scale"])
            mod.zero_point = int(state[f"{name}.out_zero_point"])
    for name, buf in graph.named_buffers():
        buf.copy_(state[f"buffer.{name}"])


# --------------------------------------------------------------------------------------------------------------
# onnxruntime (static QDQ)


def _build_dynamic(model: nn.Module, config: Int8Config, example: Any) -> bytes:
    """Dynamic int8 through onnxruntime: int8 weights; each batch's activations get their own scale at run time
    (MatMulInteger). Only MatMul/Gemm are quantized (the usual choice for Linear-heavy transformers)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from effdl.export.onnx import export_onnx

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        fp32, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        export_onnx(model, example, fp32)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(out), op_types_to_quantize=["MatMul", "Gemm"],
                         per_channel=config.per_channel, weight_type=QuantType.QInt8,
                         extra_options={"MatMulConstBOnly": True})  # fmt: skip
        return out.read_bytes()


def _build_qdq(model: nn.Module, config: Int8Config, example: Any, data: Any) -> tuple[bytes, dict[str, Any]]:
    """Static int8 through onnxruntime, lowered from effdl's own calibrated fake-quant model (``model`` itself when
    it is one, else W8A8 with ``config``'s techniques): the same scales and integers run in onnxruntime.

    With ``config.requantize``, layers onnxruntime would leave in float (their output meets a float op) get an 8-bit
    output quantizer, calibrated on ``data``, in the simulation and the lowered graph alike; a layer that still has
    no int8 kernel loses it again. Returns the ONNX bytes and what the report says about the lowering."""
    from effdl.quant.api import quantize_, quantized_layers
    from effdl.quant.modules import FakeQuantizer, QuantMultiheadAttention
    from effdl.quant.qdq import float_nodes, lower_qdq

    if not isinstance(example, torch.Tensor):
        raise UnsupportedError("the onnxruntime static runtime takes models with one input tensor; use "
                               "runtime='onnxruntime-dynamic'")  # fmt: skip
    sim = copy.deepcopy(model).eval()
    info: dict[str, Any] = {}
    if quantized_layers(sim):
        info["simulation"] = "the fake-quant model given (its own scales)"
    else:
        report = quantize_(sim, config.quant_config(), example_inputs=example, data=data,
                           calibration_batches=config.calibration_batches)  # fmt: skip
        info["simulation"] = config.quant_config().describe()
        info["techniques"] = report.details.get("techniques", {})
    with _quiet():
        onnx_bytes = lower_qdq(sim, example)
        floats = float_nodes(onnx_bytes)
    layers = quantized_layers(sim)
    requantized = [n for n in floats if n in layers and not isinstance(layers[n], QuantMultiheadAttention)]
    if config.requantize and requantized:
        for n in requantized:
            layers[n].output_quant = FakeQuantizer(8, signed=False, observer=config.quant_config().observer_for(n))
        _observe_outputs(sim, [layers[n].output_quant for n in requantized], data, config.calibration_batches)
        with _quiet():
            onnx_bytes = lower_qdq(sim, example)
            floats = float_nodes(onnx_bytes)
        useless = [n for n in requantized if n in floats]
        if useless:  # no int8 kernel even with an 8-bit output: keep the float output (less error, same speed)
            for n in useless:
                layers[n].output_quant = None
            with _quiet():
                onnx_bytes = lower_qdq(sim, example)
            requantized = [n for n in requantized if n not in useless]
    info["requantized"] = requantized if config.requantize else []
    info["float_layers"] = floats
    info["agreement"] = _agreement(sim, onnx_bytes, example)
    return onnx_bytes, info


@torch.no_grad()
def _observe_outputs(model: nn.Module, quantizers: list, data: Any, batches: int) -> None:
    """Calibrates only the given (new) quantizers; every other quantizer keeps its frozen scale."""
    for q in quantizers:
        q.observing = True
    try:
        for args in calibration_inputs(data, batches):
            model(*args)
    finally:
        for q in quantizers:
            q.observing = False


@torch.no_grad()
def _agreement(sim: nn.Module, onnx_bytes: bytes, example: torch.Tensor) -> dict[str, float]:
    """How far the runtime's output is from the simulation's, in quantization steps of an 8-bit grid over the
    simulated output's range (``steps <= 1``: what runs is what was simulated). ``steps_without_int8_kernels`` is the
    same graph run with onnxruntime's int8 fusions off (every QDQ pair computed in float): when it is as large, the
    difference comes from float rounding order flipping codes at rounding boundaries, not from the int8 kernels."""
    want = flatten_tensors(sim(example))[0].float()
    step = float(want.max() - want.min()) / 255 or 1.0
    out: dict[str, float] = {"step": step}
    for key, basic in (("steps", False), ("steps_without_int8_kernels", True)):
        session = _session(onnx_bytes, None, basic=basic)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]).float()
        diff = (got - want).abs()
        out[key] = float(diff.max()) / step
        if not basic:
            out["max_abs_diff"], out["mean_steps"] = float(diff.max()), float(diff.mean()) / step
    if out["steps"] <= 1.0:
        out["why"] = "within one step: the runtime computes what was simulated"
    elif out["steps_without_int8_kernels"] >= 0.9 * out["steps"]:
        out["why"] = ("float rounding order: the same graph without int8 kernels differs as much; a float op computed "
                      "in another order flips a code at a rounding boundary, and later layers carry it")  # fmt: skip
    else:
        out["why"] = "onnxruntime's int8 kernels round differently from the simulation (requantization arithmetic)"
    return out


# --------------------------------------------------------------------------------------------------------------
# Public API


def convert_int8(
    model: nn.Module,
    config: Int8Config | None = None,
    *,
    example_inputs: torch.Tensor,
    data: Any = None,
    batch_size: int | None = None,
    threads: int | None = None,
) -> Int8Model:
    """Post-training int8 quantization with real int8 execution. ``model`` is not changed.

    Args:
        model: a float model (eval mode is used; BatchNorm is folded), or a calibrated fake-quant model (from
            ``quantize_`` or QAT), which the onnxruntime runtime lowers with its own scales.
        config: an :class:`Int8Config` (default: ``runtime="auto"``).
        example_inputs: one batch the model accepts (traces the model).
        data: calibration batches (DataLoader, Dataset, or iterable of tensors / ``(inputs, targets)``); without
            it, ``example_inputs`` is the only calibration batch (fine for tests, poor for accuracy).
        batch_size: the batch size the model will serve; ``runtime="auto"`` times the runtimes on it
            (default: the batch size of ``example_inputs``).
        threads: intra-op threads for onnxruntime sessions and for the timing (default: torch's setting).

    Returns:
        An :class:`Int8Model`; ``.save(path)`` and :func:`load_int8` round-trip it.

    Example:
        >>> from effdl.models import create_model
        >>> m = create_model("test_cnn1d").eval()
        >>> q = convert_int8(m, Int8Config(runtime="torch-ao"), example_inputs=torch.randn(8, 1, 40))
        >>> q(torch.randn(2, 1, 40)).shape, q.runtime
        (torch.Size([2, 10]), 'torch-ao')
    """
    config = config or Int8Config()
    if not isinstance(config, Int8Config):
        raise ConfigError(f"convert_int8 takes an Int8Config, got {type(config).__name__}")
    if isinstance(example_inputs, list):
        example_inputs = tuple(example_inputs)
    tensors = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ConfigError("convert_int8 needs example_inputs, a batch tensor (or tuple of them) the model accepts")
    # auto weighs the static runtimes; dynamic int8 quantizes only matmuls (a CNN would stay mostly float), so it is
    # used when asked for by name
    auto = [r for r in available_runtimes() if r != "onnxruntime-dynamic"]
    runtimes = auto if config.runtime == "auto" else [config.runtime]
    if config.runtime != "auto":
        _require_runtime(config.runtime)
    if not runtimes:
        raise UnsupportedError(
            "no int8 runtime is available: torch has no x86/fbgemm quantized engine and onnxruntime is not "
            "installed; pip install 'effdl[onnx]'"
        )
    if config.runtime == "auto" and "onnxruntime" not in runtimes:
        log.warning("onnxruntime is not installed: int8 falls back to torch-ao (deprecated FX path, often less "
                    "accurate); pip install 'effdl[onnx]' for effdl's own int8 lowering")  # fmt: skip
    model = model.eval()
    calib = data if data is not None else [(tensors, None)]
    meta = {
        "config": config.to_dict(),
        "spec": model_spec(model),
        "structure": structure_records(model),  # how load_int8 rebuilds the float model it was made from
        "input_shape": list(tensors[0].shape[1:]),
        "threads": threads,
    }
    built: dict[str, Int8Model] = {}
    skipped: dict[str, str] = {}
    if "onnxruntime" not in available_runtimes():
        skipped["onnxruntime"] = "not installed (pip install 'effdl[onnx]')"
    for runtime in runtimes:
        try:
            built[runtime] = _build(runtime, model, config, example_inputs, calib, meta)
        except Exception as exc:
            if config.runtime != "auto":
                raise
            skipped[runtime] = f"{type(exc).__name__}: {str(exc)[:300]}"  # another runtime may take the model
            log.warning("int8 runtime %s cannot take %s (%s); trying the others", runtime, type(model).__name__,
                        skipped[runtime])  # fmt: skip
    if not built:
        raise UnsupportedError(
            f"no int8 runtime could take {type(model).__name__}: "
            + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    accuracy = _accuracy(model, built, calib)
    for name, db in accuracy.items():
        if config.min_sqnr_db is not None and db < config.min_sqnr_db:
            skipped[name] = f"SQNR {db:.1f} dB against fp32 is below min_sqnr_db={config.min_sqnr_db}"
            del built[name]
        elif db < 20.0:
            log.warning(
                "int8 runtime %s reaches only %.1f dB SQNR against fp32 on the calibration data; try Int8Config("
                "equalize=True, bias_correction=True) or keep sensitive layers float",
                name,
                db,
            )
    chosen, times, reason = _choose(model, built, config, tensors, (batch_size, threads), accuracy, meta)
    chosen.selection = times
    chosen.skipped = skipped
    chosen.accuracy = accuracy
    chosen.reason = reason
    return chosen


def _build(runtime: str, model: nn.Module, config: Int8Config, example: Any, calib: Any, meta: dict) -> Int8Model:
    from effdl.quant.api import quantized_layers

    if runtime == "torch-ao":
        if quantized_layers(model):
            raise UnsupportedError("torch-ao calibrates its own scales and cannot run effdl's fake-quant model")
        if config.techniques() or config.per_layer_observer or config.ignore:
            raise UnsupportedError(
                "torch-ao calibrates on its own and cannot carry effdl's PTQ techniques, per-layer observers or "
                "ignored layers; the onnxruntime runtime runs them (pip install 'effdl[onnx]')"
            )
        return Int8Model(runtime, _build_ao(model, config, example, calib), meta | {"runtime": runtime})
    if runtime == "onnxruntime-dynamic":
        return Int8Model(runtime, _build_dynamic(model, config, example), meta | {"runtime": runtime})
    onnx_bytes, info = _build_qdq(model, config, example, calib)
    return Int8Model(runtime, onnx_bytes, meta | {"runtime": runtime, "lowering": info})


@torch.no_grad()
def _accuracy(model: nn.Module, built: dict[str, Int8Model], calib: Any) -> dict[str, float]:
    """SQNR (dB) of each runtime's first output against fp32 on the first calibration batch."""
    from effdl.measure.evaluation import sqnr_db

    args = next(iter(calibration_inputs(calib, 1)))
    ref = flatten_tensors(model(*args))[0]
    return {name: sqnr_db(ref, q(*args)) for name, q in built.items()}


def _choose(
    model: nn.Module,
    built: dict[str, Int8Model],
    config: Int8Config,
    tensors: tuple,
    serving: tuple[int | None, int | None],
    accuracy: dict[str, float],
    meta: dict[str, Any],
) -> tuple[Int8Model, dict[str, float], str]:
    """The runtime to deploy: with ``runtime="auto"``, the fastest of the int8 runtimes and fp32 on the serving
    batch; fp32 (when ``fallback``) if it wins or no int8 runtime is accurate enough."""
    batch_size, threads = serving
    if not built:
        if not config.fallback:
            raise UnsupportedError(
                f"no int8 runtime reached min_sqnr_db={config.min_sqnr_db} (best: "
                f"{max(accuracy.values()):.1f} dB); lower the bar, add PTQ techniques (equalize, bias_correction, "
                "adaround), ignore the sensitive layers, or allow fallback=True"
            )
        reason = f"fp32: no int8 runtime reached min_sqnr_db={config.min_sqnr_db}"
        log.warning("%s; deploying the float model", reason)
        return _fp32(model, meta), {}, reason
    if config.runtime != "auto":
        only = next(iter(built.values()))
        return only, {}, f"{only.runtime}: asked for by name"
    n = batch_size or int(tensors[0].shape[0])
    x = tuple(t[:1].expand(n, *t.shape[1:]).contiguous() for t in tensors)
    from effdl.measure.latency import compare_latency

    x = x if len(x) > 1 else x[0]
    times = {k: v.median_ms for k, v in compare_latency({"fp32": model, **built}, x, threads=threads).items()}
    best = min(built, key=lambda k: times[k])
    log.info("int8 runtime for batch %d: %s (%s)", n, best, ", ".join(f"{k} {v:.3f} ms" for k, v in times.items()))
    if times[best] >= times["fp32"]:
        reason = f"fp32: at batch {n} every int8 runtime was slower than fp32 ({best} {times[best]:.3f} ms vs " \
                 f"{times['fp32']:.3f} ms)"  # fmt: skip
        if config.fallback:
            log.warning("%s; deploying the float model (Int8Config(fallback=False) keeps int8)", reason)
            return _fp32(model, meta), times, reason
        log.warning("%s; deploying %s anyway (fallback=False)", reason, best)
        return built[best], times, reason + f"; {best} kept (fallback=False)"
    return built[best], times, f"{best}: fastest at batch {n} ({times[best]:.3f} ms vs fp32 {times['fp32']:.3f} ms)"


def _fp32(model: nn.Module, meta: dict[str, Any]) -> Int8Model:
    return Int8Model("fp32", copy.deepcopy(model), meta | {"runtime": "fp32"})


@register_transform(Int8Config, in_place=False)
def _int8(model: nn.Module, config: Int8Config, context: TransformContext) -> Applied:
    """Real int8: a new :class:`Int8Model`; the float model is left as it was."""
    check_example_inputs(model, context.example_inputs, caller="convert_int8")
    before = profile(model, context.example_inputs, latency=False).summary()
    q = convert_int8(
        model,
        config,
        example_inputs=context.example_inputs,
        data=context.data,
        batch_size=context.batch_size,
        threads=context.threads,
    )
    after = dataclasses.replace(before, size_bytes=q.size_bytes())  # the same MACs, done in int8
    details = {"method": "int8", "runtime": q.runtime, "runtime_selection_ms": q.selection,
               "runtimes_skipped": q.skipped, "sqnr_db": q.accuracy, "reason": q.reason,
               "available_runtimes": available_runtimes(), **q.meta.get("lowering", {})}  # fmt: skip
    return Applied(q, Report(command="int8", before=before, after=after, config=config.to_dict(), details=details))


def load_int8(path: str | os.PathLike, *, model: nn.Module | None = None, threads: int | None = None) -> Int8Model:
    """Loads a model saved by :meth:`Int8Model.save`. A torch-ao file is rebuilt from the model registry (or from
    ``model``, the float architecture, for models not in the registry).

    Example:
        >>> import tempfile
        >>> from effdl.models import create_model
        >>> m = create_model("test_cnn1d").eval()
        >>> q = convert_int8(m, Int8Config(runtime="torch-ao"), example_inputs=torch.randn(8, 1, 40))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     q2 = load_int8(q.save(f"{d}/m"))
        >>> x = torch.randn(3, 1, 40)
        >>> torch.equal(q(x), q2(x))
        True
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no int8 model at {path}; save one with Int8Model.save(path)")
    if path.suffix == ".onnx":
        side = path.with_name(path.name + ".json")
        meta = json.loads(side.read_text()) if side.exists() else {"runtime": "onnxruntime"}
        _require_runtime("onnxruntime")
        meta.pop("kind", None)
        meta["threads"] = threads
        runtime = meta.get("runtime", "onnxruntime")
        return Int8Model(runtime if runtime.startswith("onnxruntime") else "onnxruntime", path.read_bytes(), meta)
    state, meta = load_checkpoint(path)
    if meta.pop("kind", None) != _FORMAT:
        raise CheckpointError(f"{path} is not an effdl int8 model (saved by Int8Model.save); load it with load_model")
    for key in ("format", "version"):
        meta.pop(key, None)
    if meta.get("runtime") == "fp32":  # the float model, deployed as the better choice
        model = model if model is not None else _float_model(meta, path)
        model.load_state_dict(state)
        return Int8Model("fp32", model.eval(), meta)
    _require_runtime("torch-ao")
    if model is None:
        model = _float_model(meta, path)
    config = Int8Config.from_dict(meta["config"])
    example = torch.zeros(1, *meta["input_shape"])
    with _quiet():
        from torch.ao.quantization.quantize_fx import convert_fx

        prepared = _prepare_ao(model, config, example)
        with torch.no_grad():
            prepared(example)
        graph = convert_fx(prepared)
    _restore_ao(graph, state)
    return Int8Model("torch-ao", graph, meta)


def _float_model(meta: dict[str, Any], path: Path) -> nn.Module:
    spec = meta.get("spec")
    if not spec:
        raise CheckpointError(
            f"{path} holds no model spec (the model was not built from effdl's registry); pass the float "
            "architecture: load_int8(path, model=MyModel())"
        )
    model = model_from_spec(spec)
    restore_structure_(model, checkpoint_structure(meta))
    return model.eval()
