"""``WeightOnlyLinear``: a Linear layer whose weight is stored as packed 4- or 8-bit codes with a scale and offset
per group, run by PyTorch's CPU weight-only kernels."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from effdl.core.errors import ConfigError, UnsupportedError
from effdl.quant.weight_only.math import Grid, dequantize, pack_int4, unpack_int4

__all__ = ["KERNELS", "WeightOnlyLinear"]

#: how a layer runs: the int4 / int8 CPU kernels, or dequantize-then-matmul where their constraints do not hold
KERNELS = ("int4pack", "int8pack", "dequant")


class WeightOnlyLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` held as integer codes on a group-wise grid (see
    :mod:`effdl.quant.weight_only.math`); optionally ``x`` is first divided by per-feature scales (AWQ).

    Buffers saved in the state_dict: ``qweight`` (uint8; (out, in/2) two 4-bit codes per byte, or (out, in)),
    ``scale`` and ``offset`` ((out, groups) bfloat16), ``bias`` (float32, if any) and ``input_scale`` ((in,),
    if any). The kernel's own packed layout is rebuilt from them on first use, so checkpoints are portable.

    Example:
        >>> lin = nn.Linear(64, 32)
        >>> q = WeightOnlyLinear.from_float(lin, bits=4, group_size=32)
        >>> x = torch.randn(3, 64)
        >>> q.kernel, bool(torch.allclose(q(x), x @ q.dequantize().T + lin.bias, rtol=0.02, atol=0.02))
        ('int4pack', True)
    """

    def __init__(
        self, in_features: int, out_features: int, *, bits: int, group_size: int, bias: bool,
        input_scale: bool = False, compute_dtype: str = "bfloat16",
    ) -> None:  # fmt: skip
        super().__init__()
        if in_features % group_size:
            raise ConfigError(f"group_size={group_size} does not divide in_features={in_features}")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size, self.compute_dtype = bits, group_size, compute_dtype
        width = in_features // 2 if bits == 4 else in_features
        groups = in_features // group_size
        self.register_buffer("qweight", torch.zeros(out_features, width, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(out_features, groups, dtype=torch.bfloat16))
        self.register_buffer("offset", torch.zeros(out_features, groups, dtype=torch.bfloat16))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("input_scale", torch.ones(in_features) if input_scale else None)
        self._cache: dict[str, Any] | None = None

    @classmethod
    def from_grid(
        cls, grid: Grid, bias: torch.Tensor | None, *, input_scale: torch.Tensor | None = None,
        compute_dtype: str = "bfloat16",
    ) -> WeightOnlyLinear:  # fmt: skip
        """The layer that runs ``grid`` (its codes, scales and offsets)."""
        out, k = grid.codes.shape
        layer = cls(k, out, bits=grid.bits, group_size=grid.group_size, bias=bias is not None,
                    input_scale=input_scale is not None, compute_dtype=compute_dtype)  # fmt: skip
        with torch.no_grad():
            layer.qweight.copy_(pack_int4(grid.codes) if grid.bits == 4 else grid.codes)
            layer.scale.copy_(grid.scale)
            layer.offset.copy_(grid.offset)
            if bias is not None:
                layer.bias.copy_(bias.detach().float())
            if input_scale is not None:
                layer.input_scale.copy_(input_scale.detach().float())
        return layer

    @classmethod
    def from_float(cls, linear: nn.Linear, *, bits: int = 4, group_size: int | None = 128,
                   symmetric: bool = False) -> WeightOnlyLinear:  # fmt: skip
        """Round-to-nearest quantization of ``linear``."""
        from effdl.quant.weight_only.math import rtn

        gs = group_size or linear.in_features
        return cls.from_grid(rtn(linear.weight.detach(), bits, gs, symmetric=symmetric), linear.bias)

    def codes(self) -> torch.Tensor:
        """The (out, in) uint8 codes."""
        return unpack_int4(self.qweight) if self.bits == 4 else self.qweight

    def dequantize(self) -> torch.Tensor:
        """The float32 weight the codes stand for (the fake-quant reference of the kernel)."""
        return dequantize(self.codes(), self.scale, self.offset, self.bits, self.group_size)

    @property
    def kernel(self) -> str:
        """Which of :data:`KERNELS` runs this layer."""
        if self.bits == 4 and self.out_features % 16 == 0 and self.group_size in (32, 64, 128, 256):
            return "int4pack"
        if self.bits == 8 and self.scale.shape[1] == 1 and not bool(self.offset.any()):
            return "int8pack"
        return "dequant"

    @property
    def weight_bits(self) -> int:
        """Bits of the stored weight: codes plus a 16-bit scale and offset per group."""
        return self.out_features * self.in_features * self.bits + 32 * self.scale.numel()

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._cache = None  # new codes: the kernel's layout is rebuilt on next use

    def _prepared(self) -> dict[str, Any]:
        if self._cache is None:  # built once per set of codes: the forward pass reads only this
            kernel = self.kernel
            cache: dict[str, Any] = {"kernel": kernel}
            if kernel == "int4pack":
                codes = self.codes().to(torch.int32).contiguous()
                cache["packed"] = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
                # (groups, out, 2): scale and offset as the kernel reads them, w = (q - 8) * scale + offset
                cache["scale_offset"] = torch.stack([self.scale.t(), self.offset.t()], dim=-1).contiguous()
            elif kernel == "int8pack":
                cache["int8"] = (self.qweight.to(torch.int16) - 128).to(torch.int8).contiguous()
                cache["scales"] = self.scale[:, 0].contiguous()
            else:
                cache["weight"] = self.dequantize()
            self._cache = cache
        return self._cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            raise UnsupportedError(
                "weight-only layers run in PyTorch's CPU int4/int8 kernels, which have no ONNX form; deploy the model "
                "in PyTorch (effdl.models.save_model / load_model)"
            )
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if self.input_scale is not None:
            x2 = x2 / self.input_scale  # AWQ: W diag(s) was quantized, so the input is divided by s
        c = self._prepared()
        kernel = c["kernel"]
        dtype = torch.bfloat16 if self.compute_dtype == "bfloat16" else torch.float32
        if kernel == "int4pack":
            so = c["scale_offset"] if dtype == torch.bfloat16 else c["scale_offset"].float()
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2.to(dtype).contiguous(), c["packed"], self.group_size, so)
        elif kernel == "int8pack":
            s = c["scales"] if dtype == torch.bfloat16 else c["scales"].float()
            y = torch.ops.aten._weight_int8pack_mm(x2.to(dtype).contiguous(), c["int8"], s)
        else:
            y = x2.float() @ c["weight"].T
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, kernel={self.kernel}")  # fmt: skip
