"""strict=True: a transform that would leave layers out raises instead, naming them, and the model is restored."""

import copy

import pytest
import torch
from torch import nn

from effdl import apply_
from effdl.core.errors import UnsupportedError
from effdl.prune import StructuredPruneConfig
from effdl.quant import QuantConfig


class Custom(nn.Module):
    """A layer with a weight matrix effdl has no fake-quantized counterpart for."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8) / 3)

    def forward(self, x):
        return x @ self.weight


def model():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), Custom(), nn.Linear(8, 2))


def test_left_out_layers_are_reported_and_strict_refuses():
    m, x = model(), torch.randn(4, 4)
    report = apply_(m, QuantConfig(), example_inputs=x)
    assert report.details["left_out"] == [{"layer": "2", "reason": "no fake-quantized counterpart for Custom"}]
    m = model()
    before = copy.deepcopy(m)
    with pytest.raises(UnsupportedError, match=r"strict: .* left 1 layer\(s\) out: 2: no fake-quantized counterpart"):
        apply_(m, QuantConfig(), example_inputs=x, strict=True)
    assert [type(c) for c in m.modules()] == [type(c) for c in before.modules()]
    torch.testing.assert_close(m(x), before(x), atol=0, rtol=0)


def test_strict_pruning_names_the_pinned_layers():
    m, x = model(), torch.randn(4, 4)
    report = apply_(m, StructuredPruneConfig(ratio=0.5), example_inputs=x)
    assert report.details["left_out"] == []  # only the output layer is pinned, and that is not left out
    assert m[0].out_features == 4 and m[2].weight.shape == (4, 4)  # x @ weight: rows follow fc0, columns pruned
    m = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    with pytest.raises(UnsupportedError, match=r"strict: .*0: layer_norm in 1 normalizes over these channels"):
        apply_(m, StructuredPruneConfig(ratio=0.5), example_inputs=x, strict=True)
