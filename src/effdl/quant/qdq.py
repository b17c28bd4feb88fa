"""Lowering a calibrated fake-quant model to an ONNX QDQ model that onnxruntime runs in int8 kernels, with effdl's
own scales, zero points, integer weights and int32 biases: what runs is what was simulated.

How: every :class:`~effdl.quant.modules.FakeQuantizer` switches to torch's own fake-quant op with its frozen
scale (TorchScript's exporter writes it as ``QuantizeLinear -> DequantizeLinear``); weights and biases are first
baked onto their grids (the codes effdl chose, AdaRound's included). The exported graph is then rewritten the way
onnxruntime's quantizer writes QDQ models: each weight becomes an int8 initializer read by a ``DequantizeLinear``
(a transpose of it is folded into the initializer), each Conv/Gemm bias an int32 initializer on the grid
``s_x * s_w``. onnxruntime's graph optimizer fuses these into ``QLinearConv``, ``QGemm``, ``MatMulIntegerToFloat``
and friends. A layer whose output is not requantized (for example the last convolution of a residual block, whose
output meets the skip connection in float) has no int8 kernel there: it runs in float on the dequantized int8
weights and inputs, so the numbers are still what effdl simulated; :func:`float_nodes` names such layers.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effdl.core.errors import UnsupportedError
from effdl.quant.modules import FakeQuantizer, QuantLayer, QuantMultiheadAttention

__all__ = ["float_nodes", "lower_qdq"]

log = logging.getLogger(__name__)

# ops that move or select values without changing them: a DequantizeLinear seen through them still gives the scale
# of the tensor they pass on
_PASS_THROUGH = ("Flatten", "Reshape", "MaxPool", "Transpose", "Squeeze", "Unsqueeze", "Identity")
_MATMUL_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose", "FusedConv", "FusedGemm", "FusedMatMul")


def _check(model: nn.Module) -> dict[str, QuantLayer]:
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantLayer)}
    if not layers:
        raise UnsupportedError("lower_qdq needs a fake-quantized model; quantize it first (quantize_ with QuantConfig)")
    for name, layer in layers.items():
        iq, wq = layer.input_quant, layer.weight_quant
        if layer.accumulator is not None:
            raise UnsupportedError(
                f"layer {name!r} simulates a {layer.accumulator.bits}-bit accumulator, which no int8 runtime has; "
                "lower a model quantized without accumulator_bits"
            )
        if iq is None or not iq.enabled or wq is None or not wq.enabled:
            raise UnsupportedError(
                f"layer {name!r} does not quantize both its input and its weight, so no int8 kernel can run it; "
                "lower a W8A8 model (QuantConfig(bits_w=8, bits_a=8)) or use a weight-only config for int4/int8 "
                "weights"
            )
        if iq.bits != 8:
            raise UnsupportedError(
                f"layer {name!r} quantizes its input to {iq.bits} bits; int8 runtimes run 8-bit activations "
                "(weights may have fewer bits: their codes fit int8); use bits_a=8"
            )
        if not iq.calibrated or not wq.calibrated:
            raise UnsupportedError(f"layer {name!r} is not calibrated; run calibrate(model, data) before lowering")
    return layers


@contextlib.contextmanager
def _lowering(model: nn.Module) -> Iterator[nn.Module]:
    """A copy of ``model`` with weights and biases baked onto their grids and every quantizer in QDQ mode."""
    low = copy.deepcopy(model).eval()
    with torch.no_grad():
        for layer in _check(low).values():
            w = layer.weight_quant(layer.weight)  # effdl's codes times the scale: the exporter recovers the codes
            bias = layer.quantized_bias(layer.bias, layer.accumulator_scale())
            # new tensors, not copies into the old ones: a weight tied to another module (GPT-2's lm_head is its
            # embedding table) must stay float there, as in the simulation
            prefix = "in_proj_" if isinstance(layer, QuantMultiheadAttention) else ""
            setattr(layer, prefix + "weight", nn.Parameter(w.detach().clone(), requires_grad=False))
            if bias is not None:
                setattr(layer, prefix + "bias", nn.Parameter(bias.detach().clone(), requires_grad=False))
    for q in low.modules():
        if isinstance(q, FakeQuantizer):
            q.onnx_qdq = True  # plain tensors, not buffers: the exporter writes them as constants, not as ops
            q.qdq_params = (q.scale.detach().float().clone(), q.zero_point.detach().round().to(torch.int32).clone())
    yield low


def lower_qdq(model: nn.Module, example_inputs: Any) -> bytes:
    """The ONNX QDQ model (bytes) of a calibrated fake-quant model (W8A8; weights may use fewer bits): int8 weights
    with effdl's per-channel scales, int32 biases, and the activation scales effdl calibrated. ``model`` is not
    changed.

    Args:
        model: a model prepared and calibrated by :func:`~effdl.quant.quantize_` (``bits_a=8``, no accumulator).
        example_inputs: a batch tensor (or tuple) the model accepts.

    Example:
        >>> from effdl.quant import QuantConfig, quantize_
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x = torch.randn(16, 4)
        >>> _ = quantize_(m, QuantConfig(), example_inputs=x)
        >>> import onnx
        >>> ops = {n.op_type for n in onnx.load_from_string(lower_qdq(m, x)).graph.node}
        >>> sorted(ops & {"QuantizeLinear", "DequantizeLinear", "Gemm"})
        ['DequantizeLinear', 'Gemm', 'QuantizeLinear']
    """
    import onnx

    from effdl.export.onnx import export_onnx

    with tempfile.TemporaryDirectory() as tmp, _lowering(model) as low:
        path = Path(tmp, "qdq.onnx")
        export_onnx(low, example_inputs, path, check=False)
        proto = onnx.load(str(path))
    _rewrite(proto.graph)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import helper, numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        elif n.op_type == "Cast" and n.input[0] in out:
            to = next(a.i for a in n.attribute if a.name == "to")
            out[n.output[0]] = out[n.input[0]].astype(helper.tensor_dtype_to_np_dtype(to))
    return out


def _axis(node) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _per_axis(values: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)


def _rewrite(graph) -> None:
    """Weights to int8 initializers (their QuantizeLinear evaluated here), transposes of them folded, Conv/Gemm
    biases to int32 on the grid ``s_x * s_w``, unused float initializers dropped."""
    from onnx import helper, numpy_helper

    consts = _constants(graph)
    new_inits: list = []
    drop: set[int] = set()
    for i, node in enumerate(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in consts:
            continue
        x, scale, zp = consts[node.input[0]], consts[node.input[1]], consts[node.input[2]]
        axis = _axis(node) % max(x.ndim, 1)
        s, z = _per_axis(scale, x.ndim, axis), _per_axis(zp, x.ndim, axis).astype(np.float64)
        info = np.iinfo(zp.dtype)
        q = np.clip(np.rint(x / s) + z, info.min, info.max).astype(zp.dtype)  # rint: half to even, as ONNX rounds
        new_inits.append(numpy_helper.from_array(q, node.output[0]))  # same name: the DequantizeLinear reads it
        consts[node.output[0]] = q
        drop.add(i)
    producers = {o: n for i, n in enumerate(graph.node) if i not in drop for o in n.output}
    consumers: dict[str, list] = defaultdict(list)
    for i, n in enumerate(graph.node):
        if i not in drop:
            for name in n.input:
                consumers[name].append(n)
    # DequantizeLinear(int8 W) -> Transpose: transpose the integers instead (onnxruntime fuses DQ -> MatMul only)
    for i, node in enumerate(graph.node):
        if i in drop or node.op_type != "Transpose":
            continue
        dq = producers.get(node.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in consts:
            continue
        if len(consumers[dq.output[0]]) != 1 or len(consumers[dq.input[0]]) != 1:
            continue
        q = consts[dq.input[0]]
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), list(range(q.ndim))[::-1])
        name = dq.input[0] + "_t"
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(q.transpose(perm)), name))
        consts[name] = q.transpose(perm)
        axis = _axis(dq) % q.ndim
        dq.input[0] = name
        _set_axis(dq, perm.index(axis))
        for c in consumers[node.output[0]]:
            for k, inp in enumerate(c.input):
                if inp == node.output[0]:
                    c.input[k] = dq.output[0]
        drop.add(i)
    bias_nodes = []
    for i, node in enumerate(graph.node):
        if i in drop or node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in consts:
            continue
        w_dq = producers.get(node.input[1])
        x_dq = _dequantized_source(node.input[0], producers)
        if w_dq is None or w_dq.op_type != "DequantizeLinear" or x_dq is None:
            continue
        bias = consts[node.input[2]].astype(np.float64)
        s = consts[x_dq.input[1]].astype(np.float64).reshape(()) * consts[w_dq.input[1]].astype(np.float64)
        s = np.broadcast_to(s.reshape(-1), bias.shape).astype(np.float32)
        codes = np.rint(bias / s.astype(np.float64)).astype(np.int32)  # already on the grid: effdl baked it there
        base = node.input[2]
        new_inits += [
            numpy_helper.from_array(codes, base + "_int32"),
            numpy_helper.from_array(s, base + "_scale"),
            numpy_helper.from_array(np.zeros_like(codes), base + "_zero_point"),
        ]
        bias_nodes.append(helper.make_node(
            "DequantizeLinear", [base + "_int32", base + "_scale", base + "_zero_point"], [base + "_dq"], axis=0,
            name=base + "_DequantizeLinear",
        ))  # fmt: skip
        node.input[2] = base + "_dq"
    kept = [n for i, n in enumerate(graph.node) if i not in drop]
    del graph.node[:]
    graph.node.extend(bias_nodes + kept)
    graph.initializer.extend(new_inits)
    _hoist_quantizers(graph, consts)
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    live = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    _short_names(graph)


# ops that only move or select values: rounding to a grid commutes with them exactly
_MOVES = ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Identity")


def _hoist_quantizers(graph, consts: dict) -> None:
    """A QuantizeLinear reached through value-moving ops (``Relu -> Flatten -> Q``) gets a copy with the same scale
    and zero point right before them (``Relu -> Q' -> DQ' -> Flatten -> Q``): the same codes (those ops commute
    with rounding to a grid), and onnxruntime can fuse the producer with its own output quantizer (``QLinearConv``
    with the ReLU folded in) and runs the moves on int8 values."""
    from onnx import helper, numpy_helper

    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, int] = defaultdict(int)
    for n in graph.node:
        for name in n.input:
            consumers[name] += 1
    inserts: dict[int, list] = defaultdict(list)  # id(node) -> nodes to put before it
    inits = []
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        first, node = None, producers.get(q.input[0])
        while node is not None and node.op_type in _MOVES and consumers[node.output[0]] == 1:
            first, node = node, producers.get(node.input[0])
        if first is None or node is None or node.op_type in ("DequantizeLinear", "QuantizeLinear"):
            continue
        if q.input[1] not in consts or q.input[2] not in consts:
            continue
        t = first.input[0]
        base = f"{t}_hoisted{len(inits)}"
        inits += [numpy_helper.from_array(np.asarray(consts[q.input[1]]), base + "_scale"),
                  numpy_helper.from_array(np.asarray(consts[q.input[2]]), base + "_zero_point")]  # fmt: skip
        axis = [a for a in q.attribute if a.name == "axis"]
        extra = {"axis": axis[0].i} if axis else {}
        inserts[id(first)] += [
            helper.make_node("QuantizeLinear", [t, base + "_scale", base + "_zero_point"], [base + "_q"],
                             name=f"{first.name}_hoisted_QuantizeLinear", **extra),
            helper.make_node("DequantizeLinear", [base + "_q", base + "_scale", base + "_zero_point"], [base + "_dq"],
                             name=f"{first.name}_hoisted_DequantizeLinear", **extra),
        ]  # fmt: skip
        first.input[0] = base + "_dq"
    if not inits:
        return
    ordered = []
    for n in graph.node:
        ordered += inserts.get(id(n), [])
        ordered.append(n)
    del graph.node[:]
    graph.node.extend(ordered)
    graph.initializer.extend(inits)


def _short_names(graph) -> None:
    """Short tensor names (``t0``, ``t1``, ...; the inputs and outputs keep theirs): the exporter's scope paths
    cost more bytes than a small model's int8 weights. Node names keep the scopes that :func:`float_nodes` reads."""
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for init in graph.initializer:
        init.name = short(init.name)
    for node in graph.node:
        node.doc_string = ""
        for i, name in enumerate(node.input):
            node.input[i] = short(name)
        for i, name in enumerate(node.output):
            node.output[i] = short(name)
    del graph.value_info[:]


def _set_axis(node, axis: int) -> None:
    from onnx import helper

    for a in node.attribute:
        if a.name == "axis":
            a.i = axis
            return
    node.attribute.append(helper.make_attribute("axis", axis))


def _dequantized_source(name: str, producers: dict) -> Any:
    """The DequantizeLinear that ``name`` comes from through value-preserving ops, or None."""
    for _ in range(8):
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "DequantizeLinear":
            return node
        if node.op_type not in _PASS_THROUGH:
            return None
        name = node.input[0]
    return None


def float_nodes(onnx_bytes: bytes, *, threads: int | None = None) -> dict[str, str]:
    """Layers that onnxruntime's optimizer left in float in a QDQ model, by module name (from the exporter's node
    scopes), with why: the int8 kernels onnxruntime fused are ``QLinearConv``, ``QGemm``, ``QLinearMatMul`` and
    ``MatMulIntegerToFloat``; a Conv/Gemm/MatMul still there runs on dequantized values.

    Example:
        >>> from effdl.quant import QuantConfig, quantize_
        >>> m, x = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 2, 3)), torch.randn(16, 1, 12)
        >>> _ = quantize_(m, QuantConfig(), example_inputs=x)
        >>> float_nodes(lower_qdq(m, x))  # the last conv's output is not requantized: no QLinearConv for it
        {'2': 'Conv runs in float (no int8 kernel: its output is not requantized or an input is float)'}
    """
    import onnx

    from effdl.export.onnx import _require

    ort = _require("onnxruntime")
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or 1)
        options.log_severity_level = 3
        options.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    weights = {i.name for i in graph.initializer}
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights}
    out: dict[str, str] = {}
    for node in graph.node:  # a weight layer still reading a dequantized weight: attention products are no layer
        if node.op_type in _MATMUL_OPS and any(i in dequantized for i in node.input[1:2]):
            out.setdefault(
                _module_name(node.name),
                f"{node.op_type} runs in float (no int8 kernel: its output is not requantized or an input is float)",
            )
    return out


def _module_name(node_name: str) -> str:
    """``/model/layer1/layer1.0/shortcut/shortcut.0/Conv`` -> ``layer1.0.shortcut.0``: TorchScript's exporter names
    nodes by module scope, a child of a container as ``parent.index``; ``model`` is export's wrapper."""
    path: list[str] = []
    node_name = node_name[node_name.find("/") :] if "/" in node_name else node_name  # "fused /model/..." too
    for seg in [p for p in node_name.split("/") if p][:-1]:
        if path and seg.startswith(path[-1] + "."):
            path[-1] = seg
        else:
            path.append(seg)
    name = ".".join(path)
    return name[len("model.") :] if name.startswith("model.") else ("" if name == "model" else name)
