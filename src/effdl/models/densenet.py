"""DenseNet-BC (Huang et al. 2017), CIFAR-style: dense blocks whose layers concatenate their input channels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from effdl.core.errors import ConfigError
from effdl.models.base import bn_nd, conv_nd, expect_inputs, register_model, spatial_dims

__all__ = ["DenseLayer", "DenseNet"]


class DenseLayer(nn.Module):
    """BN -> ReLU -> 1x1 conv (4k) -> BN -> ReLU -> 3x3 conv (k); output is ``cat([x, new], dim=1)``.

    Example:
        >>> DenseLayer(2, 8, growth_rate=4)(torch.zeros(1, 8, 4, 4)).shape
        torch.Size([1, 12, 4, 4])
    """

    def __init__(self, dim: int, in_channels: int, *, growth_rate: int) -> None:
        super().__init__()
        conv, bn = conv_nd(dim), bn_nd(dim)
        inner = 4 * growth_rate
        self.bn1, self.relu1 = bn(in_channels), nn.ReLU()
        self.conv1 = conv(in_channels, inner, 1, bias=False)
        self.bn2, self.relu2 = bn(inner), nn.ReLU()
        self.conv2 = conv(inner, growth_rate, 3, padding=1, bias=False)

    def forward(self, x):
        new = self.conv2(self.relu2(self.bn2(self.conv1(self.relu1(self.bn1(x))))))
        return torch.cat([x, new], dim=1)


class Transition(nn.Module):
    """BN -> ReLU -> 1x1 conv (compression) -> 2x average pooling."""

    def __init__(self, dim: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn, self.relu = bn_nd(dim)(in_channels), nn.ReLU()
        self.conv = conv_nd(dim)(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool1d(2) if dim == 1 else nn.AvgPool2d(2)

    def forward(self, x):
        return self.pool(self.conv(self.relu(self.bn(x))))


class DenseNet(nn.Module):
    """Stem conv (2k channels), dense blocks separated by transitions (compression 0.5), BN-ReLU, pooling, Linear.

    Example:
        >>> DenseNet((3, 16, 16), 10, growth_rate=4, blocks=(2, 2))(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, *, growth_rate: int = 12, blocks: Sequence[int] = (6, 6, 6)
    ) -> None:
        super().__init__()
        dim = spatial_dims("DenseNet", input_shape)
        if growth_rate < 1 or not blocks or min(blocks) < 1:
            raise ConfigError(
                f"need growth_rate >= 1 and blocks of >= 1 layer, got {growth_rate=}, blocks={list(blocks)}"
            )
        c = 2 * growth_rate
        layers: list[nn.Module] = [conv_nd(dim)(input_shape[0], c, 3, padding=1, bias=False)]
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(DenseLayer(dim, c, growth_rate=growth_rate))
                c += growth_rate
            if i < len(blocks) - 1:
                layers.append(Transition(dim, c, c // 2))
                c //= 2
        layers += [bn_nd(dim)(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1) if dim == 1 else nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(c, num_classes)
        expect_inputs(self, input_shape, fixed_size=False)

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))


def _densenet(*, input_shape, num_classes, growth_rate=12, blocks=(6, 6, 6)):
    return DenseNet(input_shape, num_classes, growth_rate=growth_rate, blocks=tuple(blocks))


register_model(
    "densenet",
    description="DenseNet-BC-40 (k=12), channel concatenation",
    input_shape=(3, 32, 32),
    train_defaults={"epochs": 30, "lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4},
)(_densenet)
register_model(
    "test_densenet",
    description="tiny DenseNet for tests",
    input_shape=(3, 16, 16),
    growth_rate=4,
    blocks=(2, 2),
)(_densenet)
