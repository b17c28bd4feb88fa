import pytest
import torch
from torch import nn

from effdl.factorize.layers import factorize_layer


@pytest.mark.parametrize(
    ("layer", "kind", "ranks"),
    [(nn.Linear(6, 5), "svd", (5,)), (nn.Conv2d(4, 6, 3, padding=1), "channel", (6,)),
     (nn.Conv2d(4, 6, 3, padding=1), "tucker2", (6, 4))],
)  # fmt: skip
def test_low_rank_weight_is_the_dense_map_it_computes(layer, kind, ranks):
    torch.manual_seed(0)
    f = factorize_layer(layer, kind, ranks)  # full rank: the same map
    torch.testing.assert_close(f.weight, layer.weight, atol=1e-5, rtol=1e-4)
    assert f.bias is f[-1].bias
