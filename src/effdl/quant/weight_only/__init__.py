"""Weight-only quantization of Linear layers to int4 / int8 with group-wise scales — round-to-nearest, GPTQ, AWQ
and HQQ — run by PyTorch's CPU weight-only kernels (``_weight_int4pack_mm_for_cpu``, ``_weight_int8pack_mm``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from effdl.quant import RTNConfig, quantize_
    >>> m = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
    >>> report = quantize_(m, RTNConfig(bits=4, group_size=32), example_inputs=torch.randn(2, 64))
    >>> type(m[0]).__name__, report.details["bits_per_weight"]
    ('WeightOnlyLinear', 5.0)
"""

from effdl.quant.weight_only.api import bits_per_weight, weight_only_layers, weight_only_targets
from effdl.quant.weight_only.config import (
    GROUP_SIZES,
    SUPPORTED_BITS,
    AWQConfig,
    GPTQConfig,
    HQQConfig,
    RTNConfig,
    WeightOnlyConfig,
)
from effdl.quant.weight_only.math import Grid, awq_clip, awq_input_scale, dequantize, gptq, group_grid, hqq, rtn
from effdl.quant.weight_only.modules import KERNELS, WeightOnlyLinear

__all__ = [
    "GROUP_SIZES",
    "KERNELS",
    "SUPPORTED_BITS",
    "AWQConfig",
    "GPTQConfig",
    "Grid",
    "HQQConfig",
    "RTNConfig",
    "WeightOnlyConfig",
    "WeightOnlyLinear",
    "awq_clip",
    "awq_input_scale",
    "bits_per_weight",
    "dequantize",
    "gptq",
    "group_grid",
    "hqq",
    "rtn",
    "weight_only_layers",
    "weight_only_targets",
]
