"""Configurations of the quantization family: :class:`QuantConfig` (simulated quantization at any bit width, for
PTQ studies, QAT and the integer engine) and :class:`Int8Config` (real int8 execution on the CPU)."""

from __future__ import annotations

import dataclasses

from effdl.core.config import Config, check_choice, check_range, last_match
from effdl.core.errors import ConfigError
from effdl.quant.math import check_bits
from effdl.quant.observers import OBSERVERS

__all__ = ["PTQ_TECHNIQUES", "RUNTIMES", "Int8Config", "QuantConfig"]

#: int8 runtimes; "auto" times each available one (and fp32) on the target batch shape and keeps the fastest
RUNTIMES = ("auto", "torch-ao", "onnxruntime", "onnxruntime-dynamic")

#: post-training techniques (fields of QuantConfig and Int8Config), in the order they run
PTQ_TECHNIQUES = ("bn_reestimate", "equalize", "smoothquant", "adaround", "bias_correction")


class _PTQ:
    """What the two configs that carry the PTQ techniques (:data:`PTQ_TECHNIQUES` fields) share."""

    def techniques(self) -> list[str]:
        """The PTQ techniques switched on, in the order they run."""
        return [t for t in PTQ_TECHNIQUES if getattr(self, t) not in (None, False, 0)]


def _check_ptq(config) -> None:
    """Validation shared by the two configs that carry the PTQ techniques."""
    if config.smoothquant is not None:
        check_range("smoothquant", config.smoothquant, 0.0, 1.0, hint="use smoothquant=0.5 (SmoothQuant's alpha)")
    check_range("adaround", config.adaround, 0, hint="use adaround=500 (iterations per layer), or 0 for off")
    for name, observer in config.per_layer_observer.items():
        if observer not in OBSERVERS:
            raise ConfigError(
                f"unknown observer {observer!r} for layers {name!r}; valid observers: {', '.join(OBSERVERS.names())}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantConfig(_PTQ, Config):
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
        per_layer_observer: ``{module name or regex: observer}``: the calibration method of those layers' inputs.
        bn_reestimate: re-estimate BatchNorm statistics on the calibration data with the preceding layer's weights
            quantized, before folding (corrects the shift weight quantization causes).
        equalize: cross-layer equalization (Nagel et al. 2019): scale channels of consecutive layers joined by a
            ReLU-like activation so their weight ranges match; the float model's outputs do not change.
        smoothquant: SmoothQuant's migration strength alpha (Xiao et al. 2023) for Linear layers: input channel
            ``j`` is divided by ``s_j = max|x_j|^a / max|w_j|^(1-a)`` and the weight's column multiplied by it.
        adaround: AdaRound (Nagel et al. 2020): iterations per layer of learned up/down rounding of the weights,
            minimizing the layer's output error on calibration data (0 = round to nearest).
        bias_correction: empirical bias correction: each layer's bias absorbs the mean output shift that
            quantization causes on the calibration data.

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
    per_layer_observer: dict[str, str] = dataclasses.field(default_factory=dict)
    bn_reestimate: bool = False
    equalize: bool = False
    smoothquant: float | None = None
    adaround: int = 0
    bias_correction: bool = False

    def validate(self) -> None:
        _check_ptq(self)
        if self.adaround and self.bits_a is not None and self.accumulator_bits is not None:
            raise ConfigError("adaround does not model accumulators; drop accumulator_bits or set adaround=0")
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
        return f"fake-quant W{self.bits_w}A{a}{mixed}" + (" LSQ" if self.lsq else "") + _techniques(self)

    def bits_for(self, name: str) -> int:
        """Weight bits of module ``name`` (the last matching ``per_layer`` entry wins)."""
        return last_match(name, self.per_layer, self.bits_w)

    def observer_for(self, name: str) -> str:
        """Activation observer of module ``name`` (the last matching ``per_layer_observer`` entry wins)."""
        return last_match(name, self.per_layer_observer, self.observer)


def _techniques(config) -> str:
    on = config.techniques()
    return f" + {', '.join(on)}" if on else ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Int8Config(_PTQ, Config):
    """Post-training int8 quantization executed by real int8 kernels on the CPU.

    Args:
        runtime: ``torch-ao`` (torch's x86/fbgemm quantized kernels through FX graph mode), ``onnxruntime`` (static
            QDQ model run by onnxruntime), ``onnxruntime-dynamic`` (int8 weights, activations quantized per batch
            at run time: no calibration, the usual choice for Linear-heavy transformers), or ``auto``: build every
            available one and keep the fastest on the target batch shape.
        calibration_batches: batches of calibration data run through the observers.
        observer: activation observer: ``minmax``, ``percentile``, ``mse``, ``entropy``, or ``histogram`` (for
            torch-ao its entropy/L2 search, elsewhere effdl's ``percentile``).
        per_channel: per-channel weight scales.
        per_layer_observer, bn_reestimate, equalize, smoothquant, adaround, bias_correction: effdl's PTQ
            techniques, as in :class:`QuantConfig`. The ``onnxruntime`` runtime runs effdl's calibrated fake-quant
            model (its scales, its integer weights); torch-ao, which calibrates on its own, is skipped when any of
            them is on.
        ignore: module names or regexes kept in float.
        requantize: give a layer whose output the runtime would otherwise leave in float (a convolution feeding a
            residual sum) an 8-bit output, so that it runs in an int8 kernel; effdl's simulation gets the same
            output quantizer.
        fallback: when fp32 is faster than every int8 runtime on the serving batch (or every int8 runtime misses
            ``min_sqnr_db``), return the float model (runtime ``fp32``) instead, with the reason in the report.
        min_sqnr_db: the least SQNR (dB) of the int8 outputs against fp32 on the calibration data that a runtime
            must reach to be chosen (None: any, with a warning below 20 dB).

    Example:
        >>> Int8Config(runtime="onnxruntime").runtime
        'onnxruntime'
        >>> Int8Config(equalize=True, bias_correction=True).quant_config().techniques()
        ['equalize', 'bias_correction']
    """

    runtime: str = "auto"
    calibration_batches: int = 8
    observer: str = "minmax"
    per_channel: bool = True
    per_layer_observer: dict[str, str] = dataclasses.field(default_factory=dict)
    bn_reestimate: bool = False
    equalize: bool = False
    smoothquant: float | None = None
    adaround: int = 0
    bias_correction: bool = False
    ignore: tuple[str, ...] = ()
    requantize: bool = True
    fallback: bool = True
    min_sqnr_db: float | None = None

    def describe(self) -> str:
        return f"int8 ({self.runtime})" + _techniques(self)

    def quant_config(self) -> QuantConfig:
        """The W8A8 fake-quant configuration this int8 model simulates (and the onnxruntime runtime runs)."""
        observer = "percentile" if self.observer == "histogram" else self.observer
        fields = {t: getattr(self, t) for t in PTQ_TECHNIQUES}
        return QuantConfig(
            bits_w=8,
            bits_a=8,
            per_channel=self.per_channel,
            observer=observer,
            per_layer_observer=dict(self.per_layer_observer),
            ignore=tuple(self.ignore),
            **fields,
        )

    def validate(self) -> None:
        check_choice("runtime", self.runtime, RUNTIMES)
        check_range("calibration_batches", self.calibration_batches, 1, hint="use calibration_batches=8")
        check_choice("observer", self.observer, ("histogram", *OBSERVERS.names()))
        _check_ptq(self)
