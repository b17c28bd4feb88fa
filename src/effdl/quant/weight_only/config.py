"""Configurations of weight-only quantization: one per method (:class:`RTNConfig`, :class:`GPTQConfig`,
:class:`AWQConfig`, :class:`HQQConfig`), sharing the grid settings of :class:`WeightOnlyConfig`."""

from __future__ import annotations

import dataclasses

from effdl.core.config import Config, check_choice, check_range
from effdl.core.errors import ConfigError

__all__ = ["GROUP_SIZES", "SUPPORTED_BITS", "AWQConfig", "GPTQConfig", "HQQConfig", "RTNConfig", "WeightOnlyConfig"]

#: bit widths with a real CPU kernel (int4: ``_weight_int4pack_mm_for_cpu``; int8: ``_weight_int8pack_mm``)
SUPPORTED_BITS = (4, 8)
#: group sizes the int4 kernel takes (None: one group per output row, "per channel")
GROUP_SIZES = (32, 64, 128, 256)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WeightOnlyConfig(Config):
    """Grid settings shared by the weight-only methods: Linear weights stored as ``bits``-bit integers with a
    scale and offset per group of ``group_size`` input features, activations left in floating point.

    Attributes:
        bits: 4 or 8.
        group_size: input features per group (32, 64, 128, 256), or None for one group per output row.
        symmetric: a grid symmetric around zero (no offset) instead of min-max with a zero point.
        ignore: module names or regexes kept in float (e.g. ``("head",)`` for the output layer).
        compute_dtype: dtype activations are cast to for the kernel: ``bfloat16`` (PyTorch's fast CPU int4/int8
            paths) or ``float32`` (exact, much slower for int4).

    The int4 kernel needs a layer's output features to be a multiple of 16 and its input features a multiple of
    the group size; int8 runs its kernel with a symmetric grid per output row. Layers outside those cases run
    through dequantize-and-matmul (same numbers, no speedup), and the report says which.
    """

    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = False
    ignore: tuple[str, ...] = ()
    compute_dtype: str = "bfloat16"

    def validate(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise ConfigError(
                f"bits must be one of {SUPPORTED_BITS} for weight-only quantization (the widths with a CPU kernel), "
                f"got bits={self.bits}; use bits=4, or QuantConfig(bits_w={self.bits}, bits_a=None) to simulate it"
            )
        if self.group_size is not None and self.group_size not in GROUP_SIZES:
            raise ConfigError(
                f"group_size must be one of {GROUP_SIZES} or None (per output channel), got "
                f"group_size={self.group_size}; use group_size=128"
            )
        check_choice("compute_dtype", self.compute_dtype, ("bfloat16", "float32"))

    def describe(self) -> str:
        group = "per-channel" if self.group_size is None else f"g{self.group_size}"
        return f"{self.method} int{self.bits} {group}{' sym' if self.symmetric else ''}"

    @property
    def method(self) -> str:
        """The method's short name (``rtn``, ``gptq``, ``awq``, ``hqq``)."""
        return type(self).__name__.removesuffix("Config").lower()

    @property
    def needs_data(self) -> bool:
        """Whether the method calibrates on data."""
        return False


@dataclasses.dataclass(frozen=True, kw_only=True)
class RTNConfig(WeightOnlyConfig):
    """Round-to-nearest on each group's min-max grid (no data).

    Example:
        >>> RTNConfig(bits=4, group_size=32).describe()
        'rtn int4 g32'
        >>> RTNConfig(bits=3)
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: bits must be one of (4, 8) for weight-only quantization ...
    """


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Calibrated(WeightOnlyConfig):
    calibration_batches: int = 8
    sequential: bool = True

    def validate(self) -> None:
        super().validate()
        check_range("calibration_batches", self.calibration_batches, 1, hint="use calibration_batches=8")

    @property
    def needs_data(self) -> bool:
        return True


@dataclasses.dataclass(frozen=True, kw_only=True)
class GPTQConfig(_Calibrated):
    """GPTQ (Frantar et al. 2023): second-order error compensation from calibration inputs.

    Attributes:
        damp: diagonal damping of the Hessian, as a fraction of its mean diagonal.
        block_size: columns per lazy batch update.
        act_order: quantize columns by decreasing Hessian diagonal (with static groups).
        calibration_batches: batches of the calibration data used.
        sequential: collect each layer's inputs after the earlier layers were quantized (the paper's schedule).

    Example:
        >>> GPTQConfig(bits=4, act_order=True).describe()
        'gptq int4 g128'
    """

    damp: float = 0.01
    block_size: int = 128
    act_order: bool = False

    def validate(self) -> None:
        super().validate()
        check_range("damp", self.damp, 0.0, low_open=True, hint="use damp=0.01")
        check_range("block_size", self.block_size, 1, hint="use block_size=128")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AWQConfig(_Calibrated):
    """AWQ (Lin et al. 2024): per-input-feature scales searched on calibration activations, which protect the
    weights of salient features; the layer divides its input by them before the int kernel.

    Attributes:
        grid: points of the ``alpha`` search in ``[0, 1)`` (and of the clipping search).
        samples: input rows kept per layer for the search.
        clip: also search each group's range shrink (AWQ's clipping step), on ``clip_samples`` of those rows.

    Example:
        >>> AWQConfig(grid=10).grid
        10
    """

    grid: int = 20
    samples: int = 4096
    clip: bool = True
    clip_samples: int = 512

    def validate(self) -> None:
        super().validate()
        check_range("grid", self.grid, 1, hint="use grid=20")
        check_range("samples", self.samples, 1, hint="use samples=4096")
        check_range("clip_samples", self.clip_samples, 1, hint="use clip_samples=512")


@dataclasses.dataclass(frozen=True, kw_only=True)
class HQQConfig(WeightOnlyConfig):
    """HQQ (Badri & Shaji 2023): data-free half-quadratic fit of a float zero point per group.

    Attributes:
        iters: optimisation steps per layer.
        lp_norm: the ``p < 1`` of the error norm.
        beta, kappa: initial penalty and its growth per step.

    Example:
        >>> HQQConfig(bits=4, group_size=64).describe()
        'hqq int4 g64'
    """

    iters: int = 20
    lp_norm: float = 0.7
    beta: float = 10.0
    kappa: float = 1.01

    def validate(self) -> None:
        super().validate()
        if self.symmetric:
            raise ConfigError("HQQ fits a zero point per group; it has no symmetric form (use symmetric=False)")
        check_range("iters", self.iters, 1, hint="use iters=20")
        check_range("lp_norm", self.lp_norm, 0.0, 1.0, low_open=True, hint="use lp_norm=0.7")
        check_range("beta", self.beta, 0.0, low_open=True, hint="use beta=10")
        check_range("kappa", self.kappa, 1.0, hint="use kappa=1.01")
