"""VGG-style nets with BatchNorm for small images (Simonyan & Zisserman 2015; CIFAR variant)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from effdl.core.errors import ConfigError
from effdl.models.base import bn_nd, conv_nd, expect_inputs, register_model, spatial_dims

__all__ = ["VGG", "VGG_CONFIGS"]

# numbers are conv widths, "M" a 2x2 max-pool
VGG_CONFIGS = {
    "11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "test": (8, "M", 16, "M", 32, "M"),
}


class VGG(nn.Module):
    """(Conv3 -> BN -> ReLU | MaxPool) per entry of ``config``, then Flatten -> Linear -> ReLU -> Linear.

    Example:
        >>> VGG((3, 16, 16), 10, config=VGG_CONFIGS["test"], hidden=32)(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, *, config: Sequence[int | str], hidden: int = 512
    ) -> None:
        super().__init__()
        dim = spatial_dims("VGG", input_shape)
        pool = nn.MaxPool1d if dim == 1 else nn.MaxPool2d
        layers: list[nn.Module] = []
        c_in = input_shape[0]
        for item in config:
            if item == "M":
                layers.append(pool(2))
            else:
                layers += [conv_nd(dim)(c_in, int(item), 3, padding=1, bias=False), bn_nd(dim)(int(item)), nn.ReLU()]
                c_in = int(item)
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            feat = self.features(torch.zeros(1, *input_shape))
        if feat.numel() == 0:
            raise ConfigError(f"input_shape {tuple(input_shape)} is too small for {list(config).count('M')} poolings")
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(math.prod(feat.shape[1:]), hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )
        expect_inputs(self, input_shape, fixed_size=True)

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


def _vgg(*, input_shape, num_classes, config="16", hidden=512):
    cfg = VGG_CONFIGS.get(config) if isinstance(config, str) else tuple(config)
    if cfg is None:
        raise ConfigError(f"unknown VGG config {config!r}; valid: {', '.join(VGG_CONFIGS)} or a list of widths and 'M'")
    return VGG(input_shape, num_classes, config=cfg, hidden=hidden)


_TRAIN = {"epochs": 30, "lr": 1e-3, "batch_size": 128, "weight_decay": 5e-4}
register_model(
    "vgg11", description="VGG-11 with BN for 32x32 inputs", input_shape=(3, 32, 32), train_defaults=_TRAIN, config="11"
)(_vgg)
register_model(
    "vgg16", description="VGG-16 with BN for 32x32 inputs", input_shape=(3, 32, 32), train_defaults=_TRAIN, config="16"
)(_vgg)
register_model("test_vgg", description="tiny VGG for tests", input_shape=(3, 16, 16), config="test", hidden=32)(_vgg)
