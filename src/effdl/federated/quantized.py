"""The FedAQT client: Conv/Linear weights held only as packed k-bit codes with one scale per output channel.

A layer's float weight exists only while the layer computes: the forward dequantizes it, uses it and drops it; the
backward dequantizes it again (nothing float is saved for backward but the layer's input, as for any layer), computes
the input and weight gradients, and writes the SGD step straight back into k bits with stochastic (or nearest)
rounding on the per-channel grid the server sent (widened for a channel whose weights outgrow it). The float weight
gradient is dropped right there, so no float copy of the weights, no float gradient of the whole model and no
optimizer state ever exists on the client.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from effdl.quant.math import stochastic_round

__all__ = ["QuantizedLayer", "QuantizedWeight", "client_layers", "quantize_weight", "to_quantized_client"]


def quantize_weight(
    w: torch.Tensor, bits: int, *, scale: torch.Tensor | None = None, stochastic: bool = False, generator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed k-bit codes of ``w`` (int8 tensor, in ``[-qmax, qmax]``, ``qmax = 2^(k-1) - 1``) and the scale per
    output channel (axis 0): ``max|w| / qmax`` unless ``scale`` is given.

    Example:
        >>> codes, scale = quantize_weight(torch.tensor([[0.4, -1.0], [2.0, 0.0]]), 4)
        >>> codes.tolist(), [round(s, 4) for s in scale.tolist()]
        ([[3, -7], [7, 0]], [0.1429, 0.2857])
    """
    qmax = 2 ** (bits - 1) - 1
    flat = w.detach().reshape(w.shape[0], -1)
    if scale is None:
        scale = (flat.abs().amax(dim=1) / qmax).clamp(min=torch.finfo(torch.float32).eps)
    units = flat / scale[:, None]
    units = stochastic_round(units, generator) if stochastic else torch.round(units)
    return units.clamp(-qmax, qmax).to(torch.int8).reshape(w.shape), scale.float()


def _pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes stored in ``bits`` bits each: 8 bits as int8, 4 and 2 bits several per uint8 byte."""
    if bits == 8:
        return codes.reshape(-1).clone()
    per = 8 // bits
    u = (codes.reshape(-1).to(torch.int16) + 2 ** (bits - 1)).to(torch.uint8)  # offset to unsigned
    pad = (-u.numel()) % per
    u = torch.cat([u, u.new_zeros(pad)]).reshape(-1, per)
    out = torch.zeros(u.shape[0], dtype=torch.uint8)
    for i in range(per):
        out |= u[:, i] << (bits * i)
    return out


def _unpack(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    if bits == 8:
        return packed[:numel]
    per = 8 // bits
    mask = (1 << bits) - 1
    parts = [((packed >> (bits * i)) & mask) for i in range(per)]
    u = torch.stack(parts, dim=1).reshape(-1)[:numel]
    return u.to(torch.int16).sub(2 ** (bits - 1)).to(torch.int8)


@dataclasses.dataclass
class QuantizedWeight:
    """A weight tensor stored as packed k-bit codes and a float32 scale per output channel.

    Example:
        >>> q = QuantizedWeight.from_float(torch.randn(3, 5), bits=4)
        >>> q.nbytes  # 15 codes at 4 bits (8 bytes) + 3 float32 scales
        20
        >>> bool((q.dequantize() - q.dequantize()).abs().max() == 0)
        True
    """

    packed: torch.Tensor
    scale: torch.Tensor
    shape: tuple[int, ...]
    bits: int

    @classmethod
    def from_float(cls, w: torch.Tensor, bits: int) -> QuantizedWeight:
        """Round-to-nearest codes of ``w`` on its own per-channel grid (what the server sends)."""
        codes, scale = quantize_weight(w, bits)
        return cls(_pack(codes, bits), scale, tuple(w.shape), bits)

    @property
    def numel(self) -> int:
        """Number of weights."""
        return int(torch.Size(self.shape).numel())

    @property
    def nbytes(self) -> int:
        """Bytes of the packed codes and the scales."""
        return self.packed.numel() * self.packed.element_size() + self.scale.numel() * 4

    def codes(self) -> torch.Tensor:
        """The int8 codes in the weight's shape."""
        return _unpack(self.packed, self.bits, self.numel).reshape(self.shape)

    def dequantize(self, rows: slice | None = None) -> torch.Tensor:
        """The float weight ``codes * scale`` (a temporary), or only output channels ``rows`` of it."""
        rows = rows or slice(0, self.shape[0])
        per_row = self.numel // self.shape[0]
        start, stop = rows.start * per_row, rows.stop * per_row
        codes = self._codes_range(start, stop).float().reshape(rows.stop - rows.start, *self.shape[1:])
        return codes.mul_(self.scale[rows].reshape(-1, *([1] * (codes.dim() - 1))))

    def _codes_range(self, start: int, stop: int) -> torch.Tensor:
        per = 8 // self.bits
        lo, hi = start // per, -(-stop // per)
        return _unpack(self.packed[lo:hi], self.bits, (hi - lo) * per)[start - lo * per : stop - lo * per]

    def step_(self, grad: torch.Tensor, lr: float, *, rows: slice | None = None, stochastic: bool, generator=None):
        """``w <- Q(w - lr * grad)`` for output channels ``rows`` (default all) on the channel's grid (widened when
        ``w`` outgrows it), with stochastic or nearest rounding; only those channels' bytes are rewritten, a few
        channels at a time (so the float temporaries stay small)."""
        rows = rows or slice(0, self.shape[0])
        per_row, per = self.numel // self.shape[0], 8 // self.bits
        chunk = max(1, BLOCK_ELEMENTS // per_row)
        for r0 in range(rows.start, rows.stop, chunk):
            r = slice(r0, min(r0 + chunk, rows.stop))
            w = self.dequantize(r).add_(grad[r0 - rows.start : r.stop - rows.start], alpha=-lr)
            # a channel whose weights outgrow its grid widens it (the grid only grows): with a fixed grid, a weight at
            # the channel's maximum could never grow, and BatchNorm nets need their weights to
            qmax = 2 ** (self.bits - 1) - 1
            self.scale[r] = torch.maximum(self.scale[r], w.reshape(w.shape[0], -1).abs().amax(dim=1) / qmax)
            codes, _ = quantize_weight(w, self.bits, scale=self.scale[r], stochastic=stochastic, generator=generator)
            del w
            start, stop = r.start * per_row, r.stop * per_row
            lo, hi = start // per, -(-stop // per)
            span = _unpack(self.packed[lo:hi], self.bits, (hi - lo) * per)  # neighbours sharing the edge bytes
            span[start - lo * per : stop - lo * per] = codes.reshape(-1)
            self.packed[lo:hi] = _pack(span, self.bits)


@dataclasses.dataclass
class _Rounding:
    lr: float
    stochastic: bool
    generator: torch.Generator | None


# float elements of one weight block in the backward pass (at least twice the layer input's): the most of a
# layer's weight (and of its gradient) that exists in float at once; the forward dequantizes up to
# FORWARD_BLOCK_ELEMENTS at once (blocking it splits the output into parts and a concatenation, which costs more
# activation memory than a small layer's weight)
BLOCK_ELEMENTS = 4096
FORWARD_BLOCK_ELEMENTS = 1 << 20


class _Op:
    """A Conv or Linear layer's computation over blocks of output channels, each block's weight dequantized only
    while it is used: the forward concatenates the blocks' outputs; the backward sums the blocks' input gradients
    and updates each block's codes from its weight gradient at once."""

    def __init__(self, module: nn.Module) -> None:
        self.linear = isinstance(module, nn.Linear)
        if not self.linear:
            self.dim = module.weight.dim() - 2
            self.conv = (F.conv1d, F.conv2d, F.conv3d)[self.dim - 1]
            self.kw = {"stride": module.stride, "padding": module.padding, "dilation": module.dilation,
                       "groups": module.groups}  # fmt: skip
        self.groups = 1 if self.linear else module.groups

    def blocks(self, q: QuantizedWeight, limit: int = BLOCK_ELEMENTS) -> list[slice]:
        out = q.shape[0]
        if self.groups != 1 or q.numel <= limit:  # grouped/depthwise: one block (channels tied group-wise)
            return [slice(0, out)]
        rows = max(1, limit // max(q.numel // out, 1))
        return [slice(i, min(i + rows, out)) for i in range(0, out, rows)]

    def __call__(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b) if self.linear else self.conv(x, w, b, **self.kw)

    def forward(self, x: torch.Tensor, q: QuantizedWeight, bias: torch.Tensor | None) -> torch.Tensor:
        blocks = self.blocks(q, FORWARD_BLOCK_ELEMENTS)
        parts = [self(x, q.dequantize(r), None if bias is None else bias[r]) for r in blocks]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1 if self.linear else 1)

    def backward(self, x: torch.Tensor, g: torch.Tensor, q: QuantizedWeight, rounding: _Rounding, need_x: bool):
        gx = None
        # each extra block adds an input-gradient part (the input's size) to sum: blocks pay off only for weights
        # much larger than the layer's input
        for r in self.blocks(q, max(BLOCK_ELEMENTS, 2 * x.numel())):
            w = q.dequantize(r)
            gr = g[..., r] if self.linear else g[:, r]
            if self.linear:
                part = gr @ w if need_x else None
                gw = gr.reshape(-1, gr.shape[-1]).T @ x.reshape(-1, x.shape[-1])
            else:  # one call for both gradients, as autograd's own convolution backward
                k = self.kw
                part, gw, _ = torch.ops.aten.convolution_backward(
                    gr, x, w, None, _tuple(k["stride"], self.dim), _tuple(k["padding"], self.dim),
                    _tuple(k["dilation"], self.dim), False, [0] * self.dim, k["groups"], [need_x, True, False],
                )  # fmt: skip
            del w
            q.step_(gw, rounding.lr, rows=r, stochastic=rounding.stochastic, generator=rounding.generator)
            if part is not None:
                gx = part if gx is None else gx + part
        return gx


def _tuple(v, n: int) -> list[int]:
    return list(v) if isinstance(v, tuple | list) else [int(v)] * n


class _QuantizedOp(torch.autograd.Function):
    """``op(x, W, b)`` with ``W`` dequantized block by block on use; the backward updates ``W``'s codes instead of
    returning its gradient (nothing float of ``W`` is saved for it)."""

    @staticmethod
    def forward(ctx, x, bias, q: QuantizedWeight, op: _Op, rounding: _Rounding):
        ctx.save_for_backward(x)
        ctx.q, ctx.op, ctx.rounding, ctx.has_bias = q, op, rounding, bias is not None
        return op.forward(x, q, bias)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        gb = None
        if ctx.has_bias and ctx.needs_input_grad[1]:
            axis = -1 if ctx.op.linear else 1
            gb = grad_out.transpose(0, axis).reshape(grad_out.shape[axis], -1).sum(dim=1)
        gx = ctx.op.backward(x, grad_out, ctx.q, ctx.rounding, ctx.needs_input_grad[0])
        return gx, gb, None, None, None


class QuantizedLayer(nn.Module):
    """A Conv or Linear layer whose weight is a :class:`QuantizedWeight` (no float weight parameter); the bias stays
    a float parameter. In training mode the backward pass updates the codes with the layer's :attr:`rounding`."""

    def __init__(self, q: QuantizedWeight, bias: torch.Tensor | None, op: _Op, kind: str) -> None:
        super().__init__()
        self.q = q
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.op = op
        self.kind = kind
        self.rounding = _Rounding(lr=0.0, stochastic=True, generator=None)

    def extra_repr(self) -> str:
        return f"{self.kind}, weight {tuple(self.q.shape)} at {self.q.bits} bits"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not self.training:
            with torch.no_grad():
                return self.op.forward(x, self.q, self.bias)
        return _QuantizedOp.apply(x, self.bias, self.q, self.op, self.rounding)


def _functional(module: nn.Module) -> _Op | None:
    if type(module) is nn.Linear:
        return _Op(module)
    if type(module) in (nn.Conv1d, nn.Conv2d, nn.Conv3d) and module.padding_mode == "zeros":
        if isinstance(module.padding, str):
            return None  # "same"/"valid" strings: the gradient helpers take numbers
        return _Op(module)
    return None


def client_layers(model: nn.Module) -> list[str]:
    """The layers a quantized client holds in k bits (plain Conv1d/2d/3d with zero padding, and Linear)."""
    return [n for n, m in model.named_modules() if n and _functional(m) is not None]


def to_quantized_client(model: nn.Module, bits: int) -> nn.Module:
    """A copy of ``model`` with every layer of :func:`client_layers` replaced by a :class:`QuantizedLayer` holding
    round-to-nearest ``bits``-bit codes of its weight (what the server sends); everything else stays float.

    Example:
        >>> m = to_quantized_client(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), 8)
        >>> type(m[0]).__name__, [n for n, _ in m.named_parameters()]
        ('QuantizedLayer', ['0.bias', '2.bias'])
    """
    import copy

    client = copy.deepcopy(model)
    for name in client_layers(client):
        layer = client.get_submodule(name)
        new = QuantizedLayer(QuantizedWeight.from_float(layer.weight, bits), layer.bias, _functional(layer),
                             type(layer).__name__)  # fmt: skip
        parent, _, child = name.rpartition(".")
        setattr(client.get_submodule(parent) if parent else client, child, new)
    return client
