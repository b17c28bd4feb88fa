"""Analysis of trained models: loss-landscape surfaces along filter-normalized random or PCA directions, 1D
interpolation between models, plots, the Hessian spectrum and trace, and sharpness.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from effdl.analysis import LandscapeConfig, loss_surface
    >>> net = nn.Linear(4, 3)
    >>> ds = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randint(0, 3, (16,)))
    >>> cfg = LandscapeConfig(dims=1, resolution=5, splits=("train",), progress=False)
    >>> loss_surface(net, {"train": ds}, cfg).values["train/loss"].shape
    (5,)
"""

from effdl.analysis.config import LandscapeConfig, SharpnessConfig
from effdl.analysis.directions import (
    Direction,
    check_direction,
    normalize_direction,
    random_direction,
    random_directions,
    trajectory_directions,
)
from effdl.analysis.hessian import HessianOperator, Spectrum, hessian_spectrum, hessian_trace_total
from effdl.analysis.job import landscape_report, load_directions
from effdl.analysis.sharpness import curve_curvature, epsilon_sharpness, sharpness_report
from effdl.analysis.surface import Surface, interpolate_models, loss_surface, restored_weights

__all__ = [
    "Direction",
    "HessianOperator",
    "LandscapeConfig",
    "SharpnessConfig",
    "Spectrum",
    "Surface",
    "check_direction",
    "curve_curvature",
    "epsilon_sharpness",
    "hessian_spectrum",
    "hessian_trace_total",
    "interpolate_models",
    "landscape_report",
    "load_directions",
    "loss_surface",
    "normalize_direction",
    "random_direction",
    "random_directions",
    "restored_weights",
    "sharpness_report",
    "trajectory_directions",
]
