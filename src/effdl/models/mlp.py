"""Multi-layer perceptron on flattened inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from effdl.core.errors import ConfigError
from effdl.models.base import expect_inputs, register_model

__all__ = ["MLP"]


class MLP(nn.Module):
    """Flatten -> (Linear -> ReLU) x len(hidden) -> Linear.

    Example:
        >>> import torch
        >>> MLP((1, 40), 10, hidden=(100, 100))(torch.zeros(3, 1, 40)).shape
        torch.Size([3, 10])
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, hidden: Sequence[int] = (100, 100)) -> None:
        super().__init__()
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ConfigError(f"hidden must be a non-empty list of positive widths, got hidden={list(hidden)}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)
        expect_inputs(self, input_shape, fixed_size=True)

    def forward(self, x):
        return self.net(x)


def _mlp(*, input_shape, num_classes, hidden=(100, 100)):
    return MLP(input_shape, num_classes, hidden=tuple(hidden))


register_model(
    "mlp",
    description="2x100 MLP (MNIST-1D paper baseline)",
    input_shape=(1, 40),
    train_defaults={"epochs": 100, "lr": 1e-2, "batch_size": 100, "weight_decay": 0.0},
)(_mlp)
register_model("test_mlp", description="tiny MLP for tests", input_shape=(1, 40), hidden=(16,))(_mlp)
