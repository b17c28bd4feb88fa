"""Plain convolutional nets (1D for MNIST-1D, 2D for digits): conv stacks followed by Flatten -> Linear."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from effdl.core.errors import ConfigError
from effdl.models.base import bn_nd, conv_nd, expect_inputs, register_model, spatial_dims

__all__ = ["ConvNet"]


class ConvNet(nn.Module):
    """(Conv -> [BN] -> ReLU) per entry of ``channels``, then Flatten -> Linear.

    Args:
        input_shape: ``(channels, length)`` or ``(channels, height, width)``.
        num_classes: outputs.
        channels: output channels of each conv layer.
        kernel_sizes, strides, paddings: one value per layer (a single value is repeated); padding defaults to
            ``kernel_size // 2`` ("same" at stride 1).
        batch_norm: insert BatchNorm after each conv.

    Example:
        >>> m = ConvNet((1, 40), 10, channels=(8, 8))
        >>> m(torch.zeros(2, 1, 40)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        channels: Sequence[int] = (32, 32, 32),
        kernel_sizes: int | Sequence[int] = 5,
        strides: int | Sequence[int] = 1,
        paddings: int | Sequence[int] | None = None,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        dim = spatial_dims("ConvNet", input_shape)
        n = len(channels)
        if n == 0:
            raise ConfigError("channels must list at least one conv layer, e.g. channels=(32, 32, 32)")
        ks, ss = _per_layer("kernel_sizes", kernel_sizes, n), _per_layer("strides", strides, n)
        ps = [k // 2 for k in ks] if paddings is None else _per_layer("paddings", paddings, n)
        layers: list[nn.Module] = []
        c_in = input_shape[0]
        for c, k, s, p in zip(channels, ks, ss, ps, strict=True):
            layers.append(conv_nd(dim)(c_in, int(c), k, stride=s, padding=p, bias=not batch_norm))
            if batch_norm:
                layers.append(bn_nd(dim)(int(c)))
            layers.append(nn.ReLU())
            c_in = int(c)
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            feat = self.features(torch.zeros(1, *input_shape))
        if feat.numel() == 0:
            raise ConfigError(f"input_shape {tuple(input_shape)} is too small for this stack of strided convolutions")
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(math.prod(feat.shape[1:]), num_classes)
        expect_inputs(self, input_shape, fixed_size=True)

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


def _per_layer(name: str, value: int | Sequence[int], n: int) -> list[int]:
    values = [int(value)] * n if isinstance(value, int) else [int(v) for v in value]
    if len(values) != n:
        raise ConfigError(f"{name} needs one value per conv layer ({n}), got {values}")
    return values


def _cnn(*, input_shape, num_classes, channels=(32, 32, 32), kernel_sizes=5, strides=1, paddings=None, batch_norm=True):
    return ConvNet(
        input_shape,
        num_classes,
        channels=tuple(channels),
        kernel_sizes=kernel_sizes,
        strides=strides,
        paddings=paddings,
        batch_norm=batch_norm,
    )


_CNN1D_TRAIN = {"epochs": 40, "lr": 1e-2, "batch_size": 64, "weight_decay": 5e-2}

register_model(
    "cnn1d",
    description="3x(Conv1d k5, 32 ch, BN, ReLU) + Linear, ~23k params (MNIST-1D reference)",
    input_shape=(1, 40),
    train_defaults=_CNN1D_TRAIN,
)(_cnn)
register_model(
    "cnn1d_convbase",
    description="ConvBase of the MNIST-1D paper: 3 strided Conv1d of 25 ch, no BN, Linear(125)",
    input_shape=(1, 40),
    train_defaults={"epochs": 40, "lr": 1e-2, "batch_size": 64, "weight_decay": 0.0},
    channels=(25, 25, 25),
    kernel_sizes=(5, 3, 3),
    strides=2,
    paddings=1,
    batch_norm=False,
)(_cnn)
register_model(
    "cnn2d",
    description="small 2D CNN for 8x8 digits: 3 conv layers (32, 64, 64) with BN, one stride-2",
    input_shape=(1, 8, 8),
    train_defaults={"epochs": 30, "lr": 3e-3, "batch_size": 64, "weight_decay": 5e-2},
    channels=(32, 64, 64),
    kernel_sizes=3,
    strides=(1, 2, 1),
)(_cnn)
register_model("test_cnn1d", description="tiny 1D CNN for tests", input_shape=(1, 40), channels=(4, 4))(_cnn)
register_model(
    "test_cnn2d", description="tiny 2D CNN for tests", input_shape=(1, 8, 8), channels=(4, 8), kernel_sizes=3
)(_cnn)
