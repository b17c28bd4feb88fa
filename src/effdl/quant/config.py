"""Configurations of the quantization family: :class:`QuantConfig` (simulated quantization at any bit width, for
PTQ studies, QAT and the integer engine) and :class:`Int8Config` (real int8 execution on the CPU)."""

from __future__ import annotations

import dataclasses

from effdl.core.config import Config, check_choice, check_range, last_match
from effdl.core.errors import ConfigError
from effdl.quant.math import check_bits
from effdl.quant.observers import OBSERVERS

__all__ = ["RUNTIMES", "Int8Config", "QuantConfig"]

#: int8 runtimes; "auto" times each available one on the target batch shape and keeps the fastest
RUNTIMES = ("auto", "torch-ao", "onnxruntime", "onnxruntime-dynamic")


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantConfig(Config):
    """Simulated (fake-quant) quantization of Conv and Linear layers at any bit width.

    Calibrate it and it is post-training quantization; train it and it is quantization-aware training (QAT).

    Args:
        bits_w: weight bits, 1 (binary) to 8; symmetric, per output channel unless ``per_channel=False``.
        bits_a: bits of each quantized layer's input activations (affine, unsigned codes), or None for
            weight-only quantization.
        per_channel: one weight scale per output channel.
        observer: activation observer (``minmax``, ``moving_average``, ``percentile``, ``mse``).
        lsq: learn the step sizes (LSQ, Esser et al. 2020) during QAT.
        fold_bn: fold BatchNorm layers into the preceding Conv/Linear first (as an integer engine runs them).
        per_layer: ``{module name or regex: weight bits}`` overriding ``bits_w`` (mixed precision).
        ignore: module names or regexes kept in float.
        accumulator_bits: simulate an integer accumulator of this many bits (8 to 32) after every layer.
        accumulator_mode: what an overflowing accumulator does: ``wrap`` (two's complement) or ``saturate``.
        cyclic: WrapNet's cyclic activation after each accumulator (wrap-aware training).
        stochastic_rounding: round weights stochastically in training-mode forward passes.

    Example:
        >>> QuantConfig(bits_w=4, bits_a=4).to_dict()["bits_w"]
        4
        >>> QuantConfig(bits_w=0)
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: bits_w must be an integer in [1, 8], got bits_w=0; use bits_w=8 for int8 ...
    """

    bits_w: int = 8
    bits_a: int | None = 8
    per_channel: bool = True
    observer: str = "minmax"
    lsq: bool = False
    fold_bn: bool = True
    per_layer: dict[str, int] = dataclasses.field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    accumulator_bits: int | None = None
    accumulator_mode: str = "wrap"
    cyclic: bool = False
    stochastic_rounding: bool = False

    def validate(self) -> None:
        check_bits(self.bits_w, "bits_w")
        if self.bits_a is not None:
            check_bits(self.bits_a, "bits_a")
        if self.observer not in OBSERVERS:
            raise ConfigError(f"unknown observer {self.observer!r}; valid observers: {', '.join(OBSERVERS.names())}")
        for name, bits in self.per_layer.items():
            check_bits(bits, f"per_layer[{name!r}]")
        if self.accumulator_bits is not None:
            check_bits(self.accumulator_bits, "accumulator_bits", low=2, high=32)
            if self.bits_a is None:
                raise ConfigError("accumulator_bits needs quantized activations; set bits_a (e.g. bits_a=4)")
        check_choice("accumulator_mode", self.accumulator_mode, ("wrap", "saturate"))
        if self.cyclic and self.accumulator_bits is None:
            raise ConfigError("cyclic=True needs accumulator_bits (e.g. accumulator_bits=8)")

    def describe(self) -> str:
        a = self.bits_a if self.bits_a is not None else 32
        mixed = " mixed" if self.per_layer else ""
        return f"fake-quant W{self.bits_w}A{a}{mixed}" + (" LSQ" if self.lsq else "")

    def bits_for(self, name: str) -> int:
        """Weight bits of module ``name`` (the last matching ``per_layer`` entry wins)."""
        return last_match(name, self.per_layer, self.bits_w)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Int8Config(Config):
    """Post-training int8 quantization executed by real int8 kernels on the CPU.

    Args:
        runtime: ``torch-ao`` (torch's x86/fbgemm quantized kernels through FX graph mode), ``onnxruntime`` (static
            QDQ model run by onnxruntime), ``onnxruntime-dynamic`` (int8 weights, activations quantized per batch
            at run time: no calibration, the usual choice for Linear-heavy transformers), or ``auto``: build every
            available one and keep the fastest on the target batch shape.
        calibration_batches: batches of calibration data run through the observers.
        observer: activation observer: ``minmax`` or ``histogram`` (torch-ao's entropy/L2 search; for onnxruntime,
            its percentile calibrator).
        per_channel: per-channel weight scales.

    Example:
        >>> Int8Config(runtime="onnxruntime").runtime
        'onnxruntime'
    """

    runtime: str = "auto"
    calibration_batches: int = 8
    observer: str = "minmax"
    per_channel: bool = True

    def describe(self) -> str:
        return f"int8 ({self.runtime})"

    def validate(self) -> None:
        check_choice("runtime", self.runtime, RUNTIMES)
        check_range("calibration_batches", self.calibration_batches, 1, hint="use calibration_batches=8")
        check_choice("observer", self.observer, ("minmax", "histogram"))
