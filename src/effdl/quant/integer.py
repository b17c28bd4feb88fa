"""Integer-exact inference: runs a fake-quantized network (after :func:`~effdl.quant.quantize_` with ``bits_a``
set, BatchNorm folded) with integer weights, integer activations, integer accumulators and fixed-point
requantization, and records per layer how large the accumulators get and how often they overflow at a given
width.

Every tensor between layers is a pair (integer codes, scale, zero point). A quantized layer's accumulator is
``acc = sum(w_q * (x_q - z_x)) + b_q`` with ``b_q = round(b / (s_x s_w))`` (int32 bias), exactly as the fake-quant
layer computes it in float. The next layer's input quantizer requantizes ``acc`` to its own codes with a
fixed-point multiplier ``M = s_x s_w / s_next ~= m0 * 2^-shift``. The fake-quant model rounds ``acc * M`` in float32
instead; the two agree except where ``acc * M`` lies within float error of a rounding boundary, and then they
differ by exactly one code. That bound (at most 1 code, rarely) is what the tests check.

Products and sums are carried in float64 holding whole numbers (exact below 2^53, far above any int32
accumulator), then cast to int64; wrap-around and saturation are applied to the exact sum (wrap-around is
order-independent; saturation of partial sums is not simulated).

Supported: quantized Conv/Linear, ReLU, max pooling, average pooling to 1, Flatten/reshape/view, Dropout and
Identity. Anything else (residual adds, attention, normalization that was not folded) is an error naming it.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from effdl.core.errors import ConfigError, UnsupportedError
from effdl.core.table import format_table
from effdl.quant.api import quantized_layers
from effdl.quant.math import accumulator_range, check_bits, fixed_point_multiplier, requantize, wrap_around
from effdl.quant.modules import QuantLayer

__all__ = ["IntegerEngine", "LayerAccumulatorStats", "QTensor"]


@dataclasses.dataclass
class QTensor:
    """Integer codes ``q`` (int64) with ``real = (q - zero_point) * scale``; ``scale`` is a scalar or per channel
    along ``axis``."""

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    axis: int | None = None

    def view_param(self, t: torch.Tensor) -> torch.Tensor:
        """Reshapes a per-channel parameter ``t`` (C,) to broadcast along :attr:`axis`."""
        if t.dim() == 0 or self.axis is None:
            return t
        shape = [1] * self.q.dim()
        shape[self.axis] = -1
        return t.reshape(shape)

    def dequantize(self) -> torch.Tensor:
        """The real values ``(q - zero_point) * scale`` as float32."""
        return ((self.q - self.view_param(self.zero_point)).double() * self.view_param(self.scale.double())).float()


@dataclasses.dataclass
class LayerAccumulatorStats:
    """Accumulator statistics of one layer over the batches run so far."""

    layer: str
    max_abs: int = 0
    outputs: int = 0
    overflows: int = 0

    @property
    def bits_needed(self) -> int:
        """Two's-complement width that holds every accumulator value seen."""
        return math.ceil(math.log2(self.max_abs + 1)) + 1 if self.max_abs > 0 else 1

    @property
    def overflow_rate(self) -> float:
        """Fraction of accumulator outputs outside the engine's accumulator range."""
        return self.overflows / max(self.outputs, 1)


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QuantLayer) or super().is_leaf_module(m, qualname)


class IntegerEngine:
    """Runs a fake-quantized model in integer arithmetic.

    Args:
        model: a model quantized by :func:`~effdl.quant.quantize_` with ``bits_a`` set (BatchNorm folded).
        accumulator_bits: width of the simulated accumulators (8 to 32; default 32).
        mode: ``wrap`` (two's complement) or ``saturate`` on overflow; layers with their own
            :class:`~effdl.quant.Accumulator` use its width and mode.

    Example:
        >>> from effdl.models import create_model
        >>> from effdl.quant import QuantConfig, quantize_
        >>> m = create_model("test_cnn1d").eval()
        >>> x = torch.randn(8, 1, 40)
        >>> _ = quantize_(m, QuantConfig(bits_w=8, bits_a=8), example_inputs=x)
        >>> engine = IntegerEngine(m)
        >>> torch.allclose(engine(x), m(x), atol=1e-3)
        True
    """

    def __init__(self, model: nn.Module, *, accumulator_bits: int = 32, mode: str = "wrap") -> None:
        check_bits(accumulator_bits, "accumulator_bits", low=2, high=32)
        if mode not in ("wrap", "saturate"):
            raise ConfigError(f"mode must be 'wrap' or 'saturate', got {mode!r}")
        layers = quantized_layers(model)
        if not layers:
            raise ConfigError("IntegerEngine needs a quantized model; call quantize_(model, QuantConfig(...)) first")
        for name, layer in layers.items():
            if layer.input_quant is None or layer.weight_quant is None:
                raise ConfigError(
                    f"layer {name!r} has no activation quantizer; the integer engine needs bits_a (e.g. bits_a=8)"
                )
        self.model = model
        self.accumulator_bits = accumulator_bits
        self.mode = mode
        try:
            graph = _Tracer().trace(model)
        except Exception as exc:
            raise UnsupportedError(f"torch.fx could not trace {type(model).__name__}: {exc}") from exc
        self.graph = graph
        self.modules = dict(model.named_modules())
        self.stats = {name: LayerAccumulatorStats(name) for name in layers}
        self.codes: dict[str, torch.Tensor] = {}  # each quantized layer's integer input codes, last batch

    def reset_stats(self) -> None:
        """Forgets the accumulator statistics."""
        self.stats = {name: LayerAccumulatorStats(name) for name in self.stats}

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[torch.fx.Node, Any] = {}
        out = None
        for node in self.graph.nodes:
            if node.op == "placeholder":
                values[node] = x
            elif node.op == "call_module":
                values[node] = self._module(node, values)
            elif node.op in ("call_function", "call_method"):
                values[node] = self._function(node, values)
            elif node.op == "get_attr":
                raise UnsupportedError(f"the integer engine does not support parameters used directly ({node.target})")
            elif node.op == "output":
                out = values[node.args[0]]
        return out.dequantize() if isinstance(out, QTensor) else out

    # ----------------------------------------------------------------------------------------------------------

    def _module(self, node: torch.fx.Node, values: dict) -> Any:
        m = self.modules[node.target]
        v = values[node.args[0]]
        if isinstance(m, QuantLayer):
            return self._layer(node.target, m, v)
        if isinstance(m, nn.Identity | nn.Dropout):
            return v
        if not isinstance(v, QTensor):  # float section before the first quantized layer
            return m(v)
        if isinstance(m, nn.ReLU):
            return dataclasses.replace(v, q=torch.maximum(v.q, v.view_param(v.zero_point)))
        if isinstance(m, nn.Flatten):
            return _flatten(v, m.start_dim, m.end_dim)
        if isinstance(m, nn.MaxPool1d | nn.MaxPool2d | nn.MaxPool3d):
            return dataclasses.replace(v, q=m(v.q.double()).round().long())
        if isinstance(m, nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d | nn.AdaptiveAvgPool3d):
            return _global_avg(v, m.output_size, type(m).__name__)
        raise UnsupportedError(
            f"the integer engine does not support {type(m).__name__} ({node.target}); supported: quantized "
            "Conv/Linear, ReLU, MaxPool, AdaptiveAvgPool to 1, Flatten, Dropout, Identity"
        )

    def _function(self, node: torch.fx.Node, values: dict) -> Any:
        args = [values[a] if isinstance(a, torch.fx.Node) else a for a in node.args]
        target = node.target
        v = args[0] if args else None
        if not isinstance(v, QTensor):
            if node.op == "call_method":
                return getattr(v, target)(*args[1:], **node.kwargs)
            return target(*args, **node.kwargs)
        if target in (F.relu, torch.relu) or target == "relu":
            return dataclasses.replace(v, q=torch.maximum(v.q, v.view_param(v.zero_point)))
        if target in (torch.flatten,) or target == "flatten":
            start = args[1] if len(args) > 1 else node.kwargs.get("start_dim", 0)
            return _flatten(v, start, -1)
        if target in ("view", "reshape") or target is torch.reshape:
            shape = args[1:] if target in ("view", "reshape") else args[1]
            return _reshape(v, shape)
        if target is operator.getitem or target == "size":
            raise UnsupportedError(f"the integer engine does not support indexing quantized tensors ({node.name})")
        raise UnsupportedError(
            f"the integer engine does not support {getattr(target, '__name__', target)} ({node.name}); supported: "
            "quantized Conv/Linear, ReLU, MaxPool, AdaptiveAvgPool to 1, Flatten/view/reshape (residual adds are "
            "not supported)"
        )

    def _layer(self, name: str, m: QuantLayer, v: Any) -> QTensor:
        iq, wq = m.input_quant, m.weight_quant
        if isinstance(v, QTensor):  # requantize the previous accumulator to this layer's input codes
            mult = v.scale.double() / iq.scale.double()
            m0, shift = fixed_point_multiplier(mult)
            q = requantize(v.q - v.view_param(v.zero_point), m0, shift, axis=v.axis if mult.dim() else None)
            q = torch.clamp(q + iq.zero_point.long(), iq.qmin, iq.qmax)
        else:
            q = iq.codes(v)
        self.codes[name] = q
        w = wq.codes(m.weight)  # (out, ...) integers
        x = (q - iq.zero_point.long()).double()
        if isinstance(m, nn.Linear):
            acc = F.linear(x, w.double())
            axis = -1
        else:
            acc = m._conv_forward(x, w.double(), None)
            axis = 1
        acc = acc.round().long()
        s = (iq.scale * wq.scale).double()  # one accumulator unit, per output channel
        if m.bias is not None:
            b = torch.round(m.bias.detach().double() / s).long()
            acc = acc + (b.reshape([-1] + [1] * (acc.dim() - 2)) if axis == 1 else b)
        bits, mode = self.accumulator_bits, self.mode
        cyclic = False
        if m.accumulator is not None:
            bits, mode, cyclic = m.accumulator.bits, m.accumulator.mode, m.accumulator.cyclic
            if cyclic and m.accumulator.knee != 0.5:
                raise UnsupportedError("the integer engine supports the cyclic activation with knee=0.5 only")
        lo, hi = accumulator_range(bits)
        st = self.stats[name]
        st.max_abs = max(st.max_abs, int(acc.abs().max()))
        st.outputs += acc.numel()
        st.overflows += int(((acc < lo) | (acc > hi)).sum())
        acc = wrap_around(acc, bits) if mode == "wrap" else acc.clamp(lo, hi)
        if cyclic:  # knee 1/2: identity up to H/2, then H - |z| (integers stay integers)
            half = 2 ** (bits - 1)
            acc = torch.where(acc.abs() <= half // 2, acc, torch.sign(acc) * (half - acc.abs()))
        return QTensor(acc, s.float() if s.dim() == 0 else s, torch.zeros((), dtype=torch.long), axis)

    def to_table(self) -> str:
        """Per-layer accumulator statistics as a table."""
        rows = [[st.layer, st.max_abs, st.bits_needed, f"{100 * st.overflow_rate:.3f}%"] for st in self.stats.values()]
        headers = ["layer", "max |acc|", "bits needed", f"overflow at {self.accumulator_bits} bits"]
        return format_table(rows, headers, align="lrrr")


def _flatten(v: QTensor, start: int, end: int) -> QTensor:
    q = torch.flatten(v.q, start, end)
    if v.axis is None or v.scale.dim() == 0:
        return dataclasses.replace(v, q=q)
    axis = v.axis % v.q.dim()
    end = end % v.q.dim()
    if not start <= axis <= end:
        return dataclasses.replace(v, q=q)
    if axis != start:
        raise UnsupportedError("the integer engine cannot flatten per-channel scales into a non-leading position")
    inner = math.prod(v.q.shape[axis + 1 : end + 1])
    return QTensor(q, v.scale.repeat_interleave(inner), v.zero_point, start)


def _reshape(v: QTensor, shape) -> QTensor:
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple | list) else tuple(shape)
    q = v.q.reshape(*shape)
    if v.axis is None or v.scale.dim() == 0:
        return dataclasses.replace(v, q=q)
    if q.dim() == 2 and v.axis in (1, -v.q.dim() + 1):
        return _flatten(v, 1, -1)
    raise UnsupportedError("the integer engine cannot reshape a tensor with per-channel scales this way")


def _global_avg(v: QTensor, output_size, kind: str) -> QTensor:
    sizes = output_size if isinstance(output_size, tuple | list) else (output_size,)
    if any(s != 1 for s in sizes):
        raise UnsupportedError(f"the integer engine supports {kind} to output size 1 only")
    dims = tuple(range(2, v.q.dim()))
    n = math.prod(v.q.shape[2:])
    total = (v.q - v.view_param(v.zero_point)).sum(dim=dims, keepdim=True)
    scale = v.scale / n  # the mean is the integer sum at a finer scale: exact
    return QTensor(total, scale, torch.zeros((), dtype=torch.long), v.axis)
