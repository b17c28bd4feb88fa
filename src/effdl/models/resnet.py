"""CIFAR-style ResNets (He et al. 2016, depth 6n+2) in 1D and 2D, with 1x1-conv projection shortcuts."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from effdl.core.errors import ConfigError
from effdl.models.base import bn_nd, conv_nd, expect_inputs, register_model, spatial_dims

__all__ = ["BasicBlock", "ResNet"]


class BasicBlock(nn.Module):
    """conv3 -> BN -> ReLU -> conv3 -> BN, plus the shortcut (identity, or 1x1 conv + BN when the shape changes).

    Example:
        >>> import torch
        >>> BasicBlock(2, 4, 8, stride=2)(torch.zeros(1, 4, 8, 8)).shape
        torch.Size([1, 8, 4, 4])
    """

    def __init__(self, dim: int, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        conv, bn = conv_nd(dim), bn_nd(dim)
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = bn(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv(in_channels, out_channels, 1, stride=stride, bias=False), bn(out_channels)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv, three stages of ``(depth - 2) / 6`` basic blocks (stride 2 between stages), global average
    pooling and a Linear classifier.

    Example:
        >>> import torch
        >>> ResNet((3, 16, 16), 10, depth=8, widths=(4, 8, 16))(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, *, depth: int = 20, widths: Sequence[int] = (16, 32, 64)
    ) -> None:
        super().__init__()
        dim = spatial_dims("ResNet", input_shape)
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), got depth={depth}")
        if len(widths) != 3:
            raise ConfigError(f"widths must give three stage widths, e.g. (16, 32, 64); got {list(widths)}")
        n = (depth - 2) // 6
        self.conv1 = conv_nd(dim)(input_shape[0], widths[0], 3, padding=1, bias=False)
        self.bn1 = bn_nd(dim)(widths[0])
        self.relu = nn.ReLU()
        stages, c_in = [], widths[0]
        for i, w in enumerate(widths):
            blocks = [
                BasicBlock(dim, c_in if j == 0 else w, w, stride=2 if (i > 0 and j == 0) else 1) for j in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
            c_in = w
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool1d(1) if dim == 1 else nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)
        expect_inputs(self, input_shape, fixed_size=False)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


def _resnet(*, input_shape, num_classes, depth=20, widths=(16, 32, 64)):
    return ResNet(input_shape, num_classes, depth=depth, widths=tuple(widths))


_TRAIN_2D = {"epochs": 30, "lr": 1e-3, "batch_size": 128, "weight_decay": 5e-4}
_TRAIN_1D = {"epochs": 40, "lr": 1e-2, "batch_size": 64, "weight_decay": 5e-2}
for _depth in (20, 56):
    register_model(
        f"resnet{_depth}",
        description=f"CIFAR-style ResNet-{_depth}, 2D",
        input_shape=(3, 32, 32),
        train_defaults=_TRAIN_2D,
        depth=_depth,
    )(_resnet)
    register_model(
        f"resnet{_depth}_1d",
        description=f"ResNet-{_depth} with 1D convolutions (MNIST-1D)",
        input_shape=(1, 40),
        train_defaults=_TRAIN_1D,
        depth=_depth,
    )(_resnet)
register_model(
    "test_resnet",
    description="tiny 2D ResNet-8 for tests",
    input_shape=(3, 16, 16),
    depth=8,
    widths=(4, 8, 16),
)(_resnet)
register_model(
    "test_resnet1d",
    description="tiny 1D ResNet-8 for tests",
    input_shape=(1, 40),
    depth=8,
    widths=(4, 8, 16),
)(_resnet)
