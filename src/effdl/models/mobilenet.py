"""MobileNetV2 (Sandler et al. 2018), CIFAR-style: inverted residuals with depthwise convolutions."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from effdl.core.errors import ConfigError
from effdl.models.base import bn_nd, conv_nd, expect_inputs, register_model, spatial_dims

__all__ = ["InvertedResidual", "MobileNetV2"]

# (expansion t, output channels c, repeats n, first stride s); stride 1 in the second row for 32x32 inputs
CIFAR_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _divisible(value: float, divisor: int = 8) -> int:
    """Rounds a width to a multiple of ``divisor`` without going below 90% of it (as in the paper's code)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


class InvertedResidual(nn.Module):
    """[1x1 expand -> BN -> ReLU6] -> depthwise 3x3 -> BN -> ReLU6 -> 1x1 project -> BN, plus identity when the
    shape is unchanged.

    Example:
        >>> import torch
        >>> InvertedResidual(2, 8, 8, stride=1, expansion=6)(torch.zeros(1, 8, 4, 4)).shape
        torch.Size([1, 8, 4, 4])
    """

    def __init__(self, dim: int, in_channels: int, out_channels: int, *, stride: int, expansion: int) -> None:
        super().__init__()
        conv, bn = conv_nd(dim), bn_nd(dim)
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [conv(in_channels, hidden, 1, bias=False), bn(hidden), nn.ReLU6()]
        layers += [
            conv(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            bn(hidden),
            nn.ReLU6(),
            conv(hidden, out_channels, 1, bias=False),
            bn(out_channels),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_residual else self.block(x)


class MobileNetV2(nn.Module):
    """Stem conv (stride 1), inverted-residual stages from ``settings``, 1x1 conv to ``last_channels``, global
    pooling, Linear.

    Example:
        >>> import torch
        >>> m = MobileNetV2((3, 16, 16), 10, width_mult=0.25, settings=((1, 8, 1, 1), (2, 16, 2, 2)), last_channels=32)
        >>> m(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        width_mult: float = 1.0,
        settings: Sequence[Sequence[int]] = CIFAR_SETTINGS,
        last_channels: int = 1280,
    ) -> None:
        super().__init__()
        dim = spatial_dims("MobileNetV2", input_shape)
        if width_mult <= 0:
            raise ConfigError(f"width_mult must be > 0, got width_mult={width_mult}; use 1.0 for the standard width")
        conv, bn = conv_nd(dim), bn_nd(dim)
        c_in = _divisible(32 * width_mult)
        layers: list[nn.Module] = [conv(input_shape[0], c_in, 3, padding=1, bias=False), bn(c_in), nn.ReLU6()]
        for row in settings:
            if len(row) != 4:
                raise ConfigError(f"each settings row is (expansion, channels, repeats, stride), got {list(row)}")
            t, c, n, s = (int(v) for v in row)
            c_out = _divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(dim, c_in, c_out, stride=s if i == 0 else 1, expansion=t))
                c_in = c_out
        last = _divisible(last_channels * max(1.0, width_mult))
        layers += [conv(c_in, last, 1, bias=False), bn(last), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1) if dim == 1 else nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(last, num_classes)
        expect_inputs(self, input_shape, fixed_size=False)

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))


def _mobilenetv2(*, input_shape, num_classes, width_mult=1.0, settings=CIFAR_SETTINGS, last_channels=1280):
    return MobileNetV2(
        input_shape,
        num_classes,
        width_mult=width_mult,
        settings=tuple(tuple(r) for r in settings),
        last_channels=last_channels,
    )


register_model(
    "mobilenetv2",
    description="MobileNetV2 (CIFAR-style, 32x32): depthwise convs, inverted residuals",
    input_shape=(3, 32, 32),
    train_defaults={"epochs": 30, "lr": 1e-3, "batch_size": 128, "weight_decay": 4e-5},
)(_mobilenetv2)
register_model(
    "test_mobilenetv2",
    description="tiny MobileNetV2 for tests",
    input_shape=(3, 16, 16),
    width_mult=0.25,
    settings=((1, 8, 1, 1), (2, 16, 2, 2)),
    last_channels=32,
)(_mobilenetv2)
