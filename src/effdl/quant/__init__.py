"""Quantization: pure quantize/dequantize math, observers, BatchNorm folding, fake-quant layers for PTQ and QAT at
any bit width (STE, LSQ), PTQ techniques (cross-layer equalization, bias correction, BatchNorm re-estimation,
AdaRound, SmoothQuant, per-layer calibration), a per-layer quantization diagnosis and accuracy-controlled PTQ, real
int8 execution (effdl's simulation lowered to onnxruntime; torch.ao as a fallback), an integer-exact inference engine,
low-bit accumulators (WrapNet), mixed precision, quantized-training studies, and weight-only int4/int8
(RTN, GPTQ, AWQ, HQQ) on PyTorch's CPU kernels.

Example:
    >>> import torch
    >>> from effdl.models import create_model
    >>> from effdl.quant import QuantConfig, quantize_
    >>> model = create_model("test_cnn1d").eval()
    >>> report = quantize_(model, QuantConfig(bits_w=4, bits_a=4), example_inputs=torch.randn(8, 1, 40))
    >>> report.after.size_bytes < report.before.size_bytes
    True
"""

from effdl.quant.api import (
    calibrate,
    dequantize_,
    freeze_,
    prepare_,
    quantize_,
    quantized_layers,
    quantized_size_bytes,
    restore_quantized_,
)
from effdl.quant.config import PTQ_TECHNIQUES, RUNTIMES, Int8Config, QuantConfig
from effdl.quant.diagnose import (
    AccuracyControl,
    QuantDiagnosis,
    accuracy_controlled_config,
    diagnose_quantization,
)
from effdl.quant.fold import fold_batchnorm_, fold_bn_weights
from effdl.quant.int8 import Int8Model, available_runtimes, convert_int8, load_int8
from effdl.quant.integer import IntegerEngine, LayerAccumulatorStats, QTensor
from effdl.quant.mixed import MixedPrecisionResult, allocate_bits, mixed_precision, mixed_precision_config
from effdl.quant.modules import (
    QUANT_LAYERS,
    Accumulator,
    FakeQuantizer,
    QuantConv1d,
    QuantConv2d,
    QuantConv3d,
    QuantLayer,
    QuantLinear,
    cyclic_activation,
)
from effdl.quant.observers import OBSERVERS, Observer, create_observer
from effdl.quant.ptq import adaround_, correct_bias_, equalize_, float_view, reestimate_bn_, smooth_
from effdl.quant.qat import FreezeQuantizers, OverflowPenalty
from effdl.quant.qdq import lower_qdq
from effdl.quant.training import TRAINING_METHODS, QuantizedWeightTraining
from effdl.quant.weight_only import (
    AWQConfig,
    GPTQConfig,
    HQQConfig,
    RTNConfig,
    WeightOnlyConfig,
    WeightOnlyLinear,
    bits_per_weight,
    weight_only_layers,
)

__all__ = [
    "OBSERVERS",
    "PTQ_TECHNIQUES",
    "QUANT_LAYERS",
    "RUNTIMES",
    "TRAINING_METHODS",
    "AWQConfig",
    "Accumulator",
    "AccuracyControl",
    "FakeQuantizer",
    "FreezeQuantizers",
    "GPTQConfig",
    "HQQConfig",
    "Int8Config",
    "Int8Model",
    "IntegerEngine",
    "LayerAccumulatorStats",
    "MixedPrecisionResult",
    "Observer",
    "OverflowPenalty",
    "QTensor",
    "QuantConfig",
    "QuantConv1d",
    "QuantConv2d",
    "QuantConv3d",
    "QuantDiagnosis",
    "QuantLayer",
    "QuantLinear",
    "QuantizedWeightTraining",
    "RTNConfig",
    "WeightOnlyConfig",
    "WeightOnlyLinear",
    "accuracy_controlled_config",
    "adaround_",
    "allocate_bits",
    "available_runtimes",
    "bits_per_weight",
    "calibrate",
    "convert_int8",
    "correct_bias_",
    "create_observer",
    "cyclic_activation",
    "dequantize_",
    "diagnose_quantization",
    "equalize_",
    "float_view",
    "fold_batchnorm_",
    "fold_bn_weights",
    "freeze_",
    "load_int8",
    "lower_qdq",
    "mixed_precision",
    "mixed_precision_config",
    "prepare_",
    "quantize_",
    "quantized_layers",
    "quantized_size_bytes",
    "reestimate_bn_",
    "restore_quantized_",
    "smooth_",
    "weight_only_layers",
]
