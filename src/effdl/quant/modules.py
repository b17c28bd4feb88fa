"""Fake-quantization modules: :class:`FakeQuantizer` (observer + quantize-dequantize with STE or LSQ),
:class:`Accumulator` (a b-bit integer accumulator that wraps around or saturates, with the WrapNet cyclic
activation and overflow statistics), and drop-in quantized Conv1d/Conv2d/Conv3d/Linear layers.

The quantized layers subclass their float counterparts, so parameter names do not change (``features.0.weight``
stays) and quantizer state is added beside them (``features.0.weight_quant.scale``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from effdl.core.errors import ConfigError
from effdl.quant.math import (
    accumulator_range,
    check_bits,
    dequantize,
    fake_quantize,
    lsq_fake_quantize,
    qrange,
    quantize,
    round_ste,
    wrap_around,
)
from effdl.quant.observers import MinMaxObserver, create_observer

__all__ = [
    "QUANT_CAPABILITIES",
    "QUANT_LAYERS",
    "Accumulator",
    "FakeQuantizer",
    "QuantConv1d",
    "QuantConv2d",
    "QuantConv3d",
    "QuantHFConv1D",
    "QuantLayer",
    "QuantLinear",
    "QuantMultiheadAttention",
    "cyclic_activation",
    "matmul_layers",
    "quant_type_for",
    "register_quant_layer",
]


class FakeQuantizer(nn.Module):
    """Quantize-dequantize of weights or activations at ``bits`` bits.

    Weights (``signed=True``) use symmetric narrow ranges, per output channel with ``axis=0``; binary weights
    (``bits=1``) use ``scale = mean|w|`` per channel (XNOR-Net). While training, weight scales follow the current
    weights; activations (``signed=False``) use an affine range from their observer, updated while
    :attr:`observing` is True (calibration) and in training mode (QAT) unless :attr:`frozen`. With
    ``learnable=True`` the scale becomes a parameter trained by LSQ (call :meth:`make_learnable` after
    calibration).

    Args:
        bits: code width, 1 to 8.
        signed: True for weights (symmetric), False for activations (affine, unsigned codes).
        axis: per-channel axis (weights: 0) or None.
        observer: name or factory of the observer (activations).
        stochastic: stochastic instead of nearest rounding in the forward pass (training studies).

    Example:
        >>> q = FakeQuantizer(4, signed=True, axis=0)
        >>> w = torch.randn(3, 5)
        >>> bool(((q(w) - w).abs() <= q.scale.reshape(3, 1) / 2 + 1e-6).all())
        True
    """

    def __init__(
        self,
        bits: int,
        *,
        signed: bool,
        axis: int | None = None,
        observer: str | object = "minmax",
        stochastic: bool = False,
    ) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.signed = signed
        self.axis = axis
        self.stochastic = stochastic
        self.qmin, self.qmax = qrange(bits, signed=signed)
        self.binary = signed and bits == 1
        self.observer = create_observer(observer, axis=axis) if not signed else None
        self.observing = False
        self.frozen = False
        self.enabled = True
        self.learnable = False
        self.onnx_qdq = False  # lowering to ONNX: torch's fake-quant ops, which export as QuantizeLinear/Dequantize
        self.qdq_params: tuple[torch.Tensor, torch.Tensor] | None = None  # (scale, int32 zero point) as constants
        self.register_buffer("scale", torch.empty(0))
        self.register_buffer("zero_point", torch.empty(0))

    @property
    def calibrated(self) -> bool:
        """True once a scale has been set."""
        return self.scale.numel() > 0

    def extra_repr(self) -> str:
        kind = "weight" if self.signed else "activation"
        return f"bits={self.bits}, {kind}, axis={self.axis}, learnable={self.learnable}"

    def _weight_qparams(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = w.detach()
        if self.bits == 1:  # XNOR-Net / BinaryConnect scaling: mean absolute value per channel
            flat = w.abs().reshape(1, -1) if self.axis is None else w.abs().transpose(0, self.axis).flatten(1)
            scale = flat.mean(dim=1).clamp(min=torch.finfo(torch.float32).eps)
            scale = scale[0] if self.axis is None else scale
            return scale, torch.zeros_like(scale)
        obs = MinMaxObserver(axis=self.axis)
        obs.update(w)
        return obs.qparams(self.bits, symmetric=True, signed=True)

    def update_qparams(self, x: torch.Tensor) -> None:
        """Refreshes the scale and zero point from ``x`` (and the observer's history, for activations)."""
        if self.signed:
            scale, zp = self._weight_qparams(x)
        else:
            self.observer.update(x)
            scale, zp = self.observer.qparams(self.bits, symmetric=False, signed=False)
        if self.learnable:
            return  # the learned scale is not overwritten
        self.scale, self.zero_point = scale.to(x.device), zp.to(x.device)

    def make_learnable(self, *, uncalibrated: bool = False) -> None:
        """Turns the calibrated scale into an ``nn.Parameter`` trained with LSQ's gradient (Esser et al. 2020).
        ``uncalibrated=True`` allows it before calibration (the value then comes from ``load_state_dict``)."""
        if not self.calibrated and not uncalibrated:
            raise ConfigError("make_learnable needs a calibrated quantizer; run calibration batches first")
        scale = self.scale.detach().clone()
        del self.scale
        self.scale = nn.Parameter(scale)
        self.learnable = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.onnx_qdq:
            return self._qdq(x)
        if self.learnable:
            update = not self.calibrated
        elif self.signed:  # weight scales follow the weights while training
            update = self.training or not self.calibrated
        else:  # activation ranges move during calibration and QAT, unless frozen
            update = self.observing or not self.calibrated or (self.training and not self.frozen)
        if update:
            self.update_qparams(x)
        if self.learnable:
            n = x.numel() if self.axis is None else x.numel() // x.shape[self.axis]
            g = 1.0 / math.sqrt(n * max(self.qmax, 1))  # LSQ gradient scale
            return lsq_fake_quantize(
                x, self.scale, self.zero_point, self.qmin, self.qmax, axis=self.axis, binary=self.binary, grad_scale=g
            )
        if self.stochastic and self.training:
            q = quantize(
                x,
                self.scale,
                self.zero_point,
                self.qmin,
                self.qmax,
                axis=self.axis,
                binary=self.binary,
                stochastic=True,
            )
            x_hat = dequantize(q, self.scale, self.zero_point, axis=self.axis)
            return x + (x_hat - x).detach()
        return fake_quantize(x, self.scale, self.zero_point, self.qmin, self.qmax, axis=self.axis, binary=self.binary)

    def _qdq(self, x: torch.Tensor) -> torch.Tensor:
        """torch's own fake-quant op with the frozen scale: the exporter writes it as QuantizeLinear ->
        DequantizeLinear. Codes run over int8 / uint8 (weights baked onto the narrow grid give the same codes)."""
        scale, zp = self.qdq_params
        lo, hi = (-128, 127) if self.signed else (0, 255)
        if self.axis is None or scale.dim() == 0:
            return torch.fake_quantize_per_tensor_affine(x, scale.reshape(()), zp.reshape(()), lo, hi)
        return torch.fake_quantize_per_channel_affine(x, scale, zp, self.axis % x.dim(), lo, hi)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes of ``x`` (int64) under the current scale and zero point."""
        return quantize(
            x.detach(), self.scale, self.zero_point, self.qmin, self.qmax, axis=self.axis, binary=self.binary
        ).long()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("scale", "zero_point"):
            key = prefix + name
            if key not in state_dict:
                continue
            current = getattr(self, name)
            if isinstance(current, nn.Parameter):
                if current.shape != state_dict[key].shape:
                    setattr(self, name, nn.Parameter(torch.empty_like(state_dict[key])))
            else:
                setattr(self, name, torch.empty_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def cyclic_activation(z: torch.Tensor, half_range: torch.Tensor | float, knee: float = 0.5) -> torch.Tensor:
    """WrapNet's cyclic activation (Ni et al., ICLR 2021) on accumulator values ``z`` in ``[-H, H)``, ``H = 2^(b-1)``:
    the identity up to ``|z| = k = knee * H``, then a linear ramp back to 0 at ``|z| = H``. The function is
    continuous and ``2H``-periodic, so it gives the same output whether or not the accumulator wrapped around.

    Example:
        >>> cyclic_activation(torch.tensor([10.0, 64.0, 96.0, 127.0, -96.0]), 128.0)
        tensor([ 10.,  64.,  32.,   1., -32.])
    """
    h = torch.as_tensor(half_range, dtype=z.dtype, device=z.device)
    k = knee * h
    mag = z.abs()
    ramp = torch.sign(z) * k * (h - mag) / (h - k)
    return torch.where(mag <= k, z, ramp)


class Accumulator(nn.Module):
    """A ``bits``-bit integer accumulator after a quantized layer.

    The layer's output ``y = s * acc`` (``s = s_x * s_w`` per output channel) is turned back into the integer
    ``acc``; values outside ``[-2^(b-1), 2^(b-1) - 1]`` wrap around (two's complement, ``mode="wrap"``) or clip
    (``mode="saturate"``, applied to the final sum). The backward pass is straight-through. With ``cyclic=True``
    the WrapNet cyclic activation follows. While training, :attr:`penalty` holds WrapNet's overflow penalty for
    this forward pass: the mean of ``relu(|acc| - 2^(b-1)) / 2^(b-1)``. Overflow counts accumulate in
    :attr:`overflows` / :attr:`total`.

    Example:
        >>> a = Accumulator(8, mode="wrap")
        >>> a(torch.tensor([[100.0, 200.0]]), torch.tensor([1.0, 1.0]), channel_axis=1)
        tensor([[100., -56.]])
    """

    def __init__(self, bits: int, *, mode: str = "wrap", cyclic: bool = False, knee: float = 0.5) -> None:
        super().__init__()
        self.bits = check_bits(bits, "accumulator_bits", low=2, high=32)
        if mode not in ("wrap", "saturate"):
            raise ConfigError(f"accumulator mode must be 'wrap' or 'saturate', got {mode!r}")
        self.mode = mode
        self.cyclic = cyclic
        self.knee = knee
        self.penalty: torch.Tensor | None = None
        self.register_buffer("overflows", torch.zeros((), dtype=torch.long))
        self.register_buffer("total", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, mode={self.mode}, cyclic={self.cyclic}"

    def reset_stats(self) -> None:
        """Zeroes the overflow counters."""
        self.overflows.zero_()
        self.total.zero_()

    @property
    def overflow_rate(self) -> float:
        """Fraction of accumulated outputs that overflowed since the last reset."""
        return float(self.overflows) / max(int(self.total), 1)

    def forward(self, y: torch.Tensor, scale: torch.Tensor, *, channel_axis: int) -> torch.Tensor:
        shape = [1] * y.dim()
        shape[channel_axis] = -1
        live = scale.reshape(shape) if scale.dim() else scale
        s = live.detach()
        lo, hi = accumulator_range(self.bits)
        units = y / s
        acc = torch.round(units.detach().double())  # float64: wrapping near 2^31 needs more than float32's 24 bits
        over = (acc < lo) | (acc > hi)
        self.overflows += over.sum()  # stays on the device: no host sync per forward
        self.total += over.numel()
        half = 2.0 ** (self.bits - 1)
        # the penalty divides by the live scale: with learned steps (LSQ) a larger step means smaller integers, and
        # the penalty must see that (with the scale detached it could only shrink the weights, which min-max scales
        # follow, leaving the integers as large as before)
        self.penalty = F.relu((y / live).abs() - half).mean() / half if self.training else None
        fixed = (wrap_around(acc, self.bits) if self.mode == "wrap" else acc.clamp(lo, hi)).to(units.dtype)
        out = units + (fixed - units).detach()  # straight-through: d out / d units = 1
        if self.cyclic:
            out = cyclic_activation(out, half, self.knee)
        return out * s


class QuantLayer:
    """Mixin of the quantized layers: fake-quantizes the input, the weight and (to the accumulator's scale
    ``s_x * s_w``, as integer engines do) the bias, then runs the float op, then the optional accumulator and the
    optional output quantizer (an int8 runtime's requantized output).

    ``weight_axis`` is the weight's output-channel axis (per-channel scales run along it); ``channel_axis`` the
    output's channel axis."""

    weight_quant: FakeQuantizer | None
    input_quant: FakeQuantizer | None
    accumulator: Accumulator | None
    channel_axis: int = 1
    weight_axis: int = 0

    def _setup(
        self,
        weight_quant: FakeQuantizer | None,
        input_quant: FakeQuantizer | None,
        accumulator: Accumulator | None,
    ) -> None:
        self.weight_quant = weight_quant
        self.input_quant = input_quant
        self.accumulator = accumulator
        self.output_quant = None  # set when an int8 runtime requantizes this layer's output (see quant.qdq)

    @classmethod
    def from_float(
        cls,
        module: nn.Module,
        *,
        weight_quant: FakeQuantizer | None,
        input_quant: FakeQuantizer | None = None,
        accumulator: Accumulator | None = None,
    ) -> nn.Module:
        """The quantized counterpart of ``module``, sharing its parameters."""
        new = cls.__new__(cls)
        new.__dict__ = module.__dict__.copy()
        for attr in ("_parameters", "_buffers", "_modules"):
            new.__dict__[attr] = getattr(module, attr).copy()
        new._setup(weight_quant, input_quant, accumulator)
        new.float_type = type(module)
        return new

    def to_float(self) -> nn.Module:
        """A plain float layer with the same (unquantized) parameters."""
        base = getattr(self, "float_type", None) or next(f for f, q in QUANT_LAYERS.items() if q is type(self))
        new = base.__new__(base)
        new.__dict__ = self.__dict__.copy()
        new._modules = {
            k: v for k, v in self._modules.items() if k not in _QUANT_PARTS
        }
        for k in _QUANT_PARTS:
            new.__dict__.pop(k, None)
        return new

    def accumulator_scale(self) -> torch.Tensor | None:
        """``s_x * s_w`` per output channel, the value of one accumulator unit, once both are calibrated."""
        wq, iq = self.weight_quant, self.input_quant
        if wq is None or iq is None or not wq.enabled or not iq.enabled or not wq.calibrated or not iq.calibrated:
            return None
        return iq.scale * wq.scale

    def quantized_bias(self, bias: torch.Tensor | None, scale: torch.Tensor | None) -> torch.Tensor | None:
        """The bias rounded to integer multiples of ``scale`` (an int32 bias in the accumulator)."""
        if bias is None or scale is None:
            return bias
        s = scale.detach()
        return round_ste(bias / s) * s

    def quant_forward(self, x: torch.Tensor, op) -> torch.Tensor:
        """``op(x_hat, w_hat, b_hat)`` then the accumulator, where ``op`` is the float layer's functional form."""
        smooth = self._buffers.get("smooth_scale")
        if smooth is not None:  # SmoothQuant: x / s here, W * s in the weight (quant.ptq.smooth_)
            x = x / smooth
        if self.input_quant is not None:
            x = self.input_quant(x)
        w = self.weight_quant(self.weight) if self.weight_quant is not None else self.weight
        scale = self.accumulator_scale()
        lowering = self.weight_quant is not None and self.weight_quant.onnx_qdq  # the bias is already on its grid
        y = op(x, w, self.bias if lowering else self.quantized_bias(self.bias, scale))
        if self.accumulator is not None:
            if scale is None:
                raise ConfigError("an accumulator needs both weights and inputs quantized (set bits_a)")
            y = self.accumulator(y, scale, channel_axis=self.channel_axis)
        output_quant = getattr(self, "output_quant", None)
        return y if output_quant is None else output_quant(y)


_QUANT_PARTS = ("weight_quant", "input_quant", "accumulator", "output_quant")


class QuantConv1d(QuantLayer, nn.Conv1d):
    """Fake-quantized ``nn.Conv1d`` (see :class:`QuantLayer`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_forward(x, self._conv_forward)


class QuantConv2d(QuantLayer, nn.Conv2d):
    """Fake-quantized ``nn.Conv2d`` (see :class:`QuantLayer`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_forward(x, self._conv_forward)


class QuantConv3d(QuantLayer, nn.Conv3d):
    """Fake-quantized ``nn.Conv3d`` (see :class:`QuantLayer`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_forward(x, self._conv_forward)


class QuantLinear(QuantLayer, nn.Linear):
    """Fake-quantized ``nn.Linear`` (see :class:`QuantLayer`); output features are the last axis.

    Example:
        >>> lin = nn.Linear(4, 2)
        >>> q = QuantLinear.from_float(lin, weight_quant=FakeQuantizer(8, signed=True, axis=0))
        >>> torch.allclose(q(torch.ones(1, 4)), lin(torch.ones(1, 4)), atol=0.05)
        True
    """

    channel_axis = -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_forward(x, F.linear)


class QuantHFConv1D(QuantLayer, nn.Module):
    """Fake-quantized Hugging Face ``Conv1D`` (GPT-2's projections: ``x @ weight + bias`` with the weight laid out
    ``(in, out)``, so its output channels run along axis 1)."""

    channel_axis = -1
    weight_axis = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = (*x.shape[:-1], self.weight.shape[1])
        y = self.quant_forward(x.reshape(-1, x.shape[-1]), _addmm)
        return y.view(size_out)


def _addmm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return x @ w if b is None else torch.addmm(b, x, w)


class QuantMultiheadAttention(QuantLayer, nn.MultiheadAttention):
    """Fake-quantized ``nn.MultiheadAttention``: the inputs and the packed q/k/v projection are quantized here; the
    output projection is an ordinary (quantized) Linear called as a module. The forward is written out (projections,
    ``scaled_dot_product_attention``, output projection), so torch's fused kernel cannot bypass the quantizers."""

    channel_axis = -1

    @property
    def weight(self) -> torch.Tensor:
        """The packed q/k/v projection, the weight this layer's quantizer acts on."""
        return self.in_proj_weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The packed q/k/v projection's bias."""
        return self.in_proj_bias

    def forward(  # type: ignore[override]
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, lq, e = query.shape
        w = self.weight_quant(self.in_proj_weight) if self.weight_quant is not None else self.in_proj_weight
        bias = self.in_proj_bias
        wq, wk, wv = w.chunk(3)
        bq, bk, bv = bias.chunk(3) if bias is not None else (None, None, None)
        quant = self.input_quant if self.input_quant is not None else (lambda t: t)
        xq = quant(query)
        xk = xq if key is query else quant(key)
        xv = xk if value is key else quant(value)
        h, d = self.num_heads, e // self.num_heads
        q = F.linear(xq, wq, bq).view(b, lq, h, d).transpose(1, 2)  # (b, h, lq, d)
        k = F.linear(xk, wk, bk).view(b, -1, h, d).transpose(1, 2)
        v = F.linear(xv, wv, bv).view(b, -1, h, d).transpose(1, 2)
        mask = _attention_mask(attn_mask, key_padding_mask, b, h, lq, k.shape[2], q.dtype)
        causal = is_causal and mask is None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (b, h, lq, lk)
            if causal:
                scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
            if mask is not None:
                scores = scores + mask
            weights = scores.softmax(-1)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
            weights = None
        out = self.out_proj(out.transpose(1, 2).reshape(b, lq, e))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
        return out, weights


def _attention_mask(attn_mask, key_padding_mask, b, h, lq, lk, dtype) -> torch.Tensor | None:
    """One additive float mask (b, h, lq, lk) from torch's boolean or float masks (True = not allowed)."""
    mask = None
    for m, shape in ((attn_mask, None), (key_padding_mask, (b, 1, 1, lk))):
        if m is None:
            continue
        m = torch.zeros(m.shape, dtype=dtype).masked_fill(m, float("-inf")) if m.dtype == torch.bool else m.to(dtype)
        if shape is not None:
            m = m.view(shape)
        elif m.dim() == 3:
            m = m.view(b, h, lq, lk)
        mask = m if mask is None else mask + m
    return mask


#: float layer type -> quantized layer type (exact types; see QUANT_CAPABILITIES for subclasses and other layers)
QUANT_LAYERS: dict[type, type] = {
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
    nn.Conv3d: QuantConv3d,
    nn.Linear: QuantLinear,
}


def _plain_subclass(base: type) -> Callable[[nn.Module], bool]:
    """A subclass that keeps the base class's forward (e.g. ``NonDynamicallyQuantizableLinear``)."""
    return lambda m: isinstance(m, base) and type(m).forward is base.forward


def _is_hf_conv1d(m: nn.Module) -> bool:
    return type(m).__name__ == "Conv1D" and type(m).__module__.startswith("transformers") and m.weight.dim() == 2


def _plain_mha(m: nn.Module) -> bool:
    return (
        type(m) is nn.MultiheadAttention
        and m._qkv_same_embed_dim
        and m.bias_k is None
        and not m.add_zero_attn
        and m.in_proj_weight is not None
    )


#: (predicate, quantized type): layers quantized by what they are, not their exact type. Extend with
#: :func:`register_quant_layer`.
QUANT_CAPABILITIES: list[tuple[Callable[[nn.Module], bool], type]] = [
    (_plain_subclass(nn.Linear), QuantLinear),
    (_plain_subclass(nn.Conv1d), QuantConv1d),
    (_plain_subclass(nn.Conv2d), QuantConv2d),
    (_plain_subclass(nn.Conv3d), QuantConv3d),
    (_is_hf_conv1d, QuantHFConv1D),
    (_plain_mha, QuantMultiheadAttention),
]


def register_quant_layer(match: type | Callable[[nn.Module], bool], quant_type: type) -> None:
    """Teaches fake quantization a layer type: ``quant_type`` (a :class:`QuantLayer` subclass whose forward calls
    ``self.quant_forward(x, op)``) replaces modules that ``match`` (a class, or a predicate).

    Example:
        >>> class MyLinear(nn.Linear):
        ...     def forward(self, x):
        ...         return super().forward(x) * 2
        >>> class QuantMyLinear(QuantLinear):
        ...     def forward(self, x):
        ...         return super().forward(x) * 2
        >>> register_quant_layer(MyLinear, QuantMyLinear)
        >>> quant_type_for(MyLinear(2, 2)) is QuantMyLinear
        True
    """
    pred = (lambda m: type(m) is match) if isinstance(match, type) else match
    QUANT_CAPABILITIES.insert(0, (pred, quant_type))


def quant_type_for(module: nn.Module) -> type | None:
    """The fake-quantized counterpart of ``module`` (None if effdl has none)."""
    if isinstance(module, QuantLayer):
        return None
    exact = QUANT_LAYERS.get(type(module))
    if exact is not None:
        return exact
    return next((q for pred, q in QUANT_CAPABILITIES if pred(module)), None)


def matmul_layers(model: nn.Module) -> dict[str, str]:
    """Every module that holds a weight matrix (a parameter of 2+ dimensions named ``*weight*``; not an embedding
    table), with why it cannot be fake-quantized ("" if it can): what a quantization report must account for.

    Example:
        >>> matmul_layers(nn.Sequential(nn.Linear(2, 2), nn.Embedding(3, 2)))
        {'0': ''}
    """
    out: dict[str, str] = {}
    skip: set[str] = set()
    for name, m in model.named_modules():
        if any(name.startswith(s + ".") for s in skip) or isinstance(m, nn.Embedding | nn.EmbeddingBag):
            continue
        if isinstance(m, QuantLayer):
            out[name] = ""
            continue
        own = [p for k, p in m.named_parameters(recurse=False) if p.dim() >= 2 and "weight" in k]
        if not own:
            continue
        qtype = quant_type_for(m)
        out[name] = "" if qtype is not None else f"no fake-quantized counterpart for {type(m).__name__}"
        if qtype is None:
            skip.add(name)
    return out
