"""Input-adaptive precision (VideoIQ: Sun, Panda, Chen, Feris, Saenko, "Dynamic Network Quantization for Efficient
Video Inference", ICCV 2021): one any-precision network runs at several bit widths, and a light recurrent policy
picks, for each frame of a clip, the width to run it at or to skip it, trading accuracy for bit operations.

Example:
    >>> import torch
    >>> from effdl.models import create_model
    >>> from effdl.adaptive import AnyPrecisionConfig, any_precision_, at_width
    >>> m = create_model("test_cnn1d")
    >>> _ = any_precision_(m, AnyPrecisionConfig(widths=(8, 4, 2)), example_inputs=torch.randn(8, 1, 40))
    >>> with at_width(m, 2):
    ...     m(torch.randn(3, 1, 40)).shape
    torch.Size([3, 10])
"""

from effdl.adaptive.anyprec import (
    AnyPrecisionConfig,
    AnyPrecisionLayer,
    AnyPrecisionTraining,
    SwitchableBatchNorm,
    any_precision_,
    at_width,
    model_widths,
    set_width_,
    width_bops,
)

__all__ = [
    "AnyPrecisionConfig",
    "AnyPrecisionLayer",
    "AnyPrecisionTraining",
    "SwitchableBatchNorm",
    "any_precision_",
    "at_width",
    "model_widths",
    "set_width_",
    "width_bops",
]
