import pytest
import torch
import torch.nn.utils.prune
from torch import nn

from effdl.measure import count_macs, module_macs, profile
from effdl.models import create_model
from effdl.models.vit import Attention


@pytest.mark.parametrize(
    ("layer", "shape", "expected"),
    [
        # out_channels x output positions x (in_channels / groups) x kernel taps
        (nn.Conv1d(3, 8, 5, stride=2, padding=1), (1, 3, 40), 8 * 19 * 3 * 5),
        (nn.Conv1d(3, 8, 5, stride=2, padding=1), (4, 3, 40), 4 * 8 * 19 * 3 * 5),
        (nn.Conv2d(4, 6, 3, padding=1, groups=2), (1, 4, 10, 10), 6 * 100 * 2 * 9),
        (nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), (1, 8, 10, 10), 8 * 25 * 1 * 9),  # depthwise
        (nn.Conv2d(3, 16, (3, 5), padding=0, bias=False), (1, 3, 12, 12), 16 * 10 * 8 * 3 * 15),
        (nn.Linear(20, 7), (1, 20), 20 * 7),
        (nn.Linear(20, 7), (2, 5, 20), 2 * 5 * 20 * 7),  # token dimension
    ],
)
def test_macs_equal_hand_count(layer, shape, expected):
    assert count_macs(layer, torch.zeros(shape)) == expected


def test_attention_macs_equal_hand_count():
    n, dim, heads = 5, 16, 2
    attn = Attention(dim, num_heads=heads)
    per_module = module_macs(attn, torch.zeros(1, n, dim))
    assert per_module["qkv"] == n * dim * 3 * dim
    assert per_module["proj"] == n * dim * dim
    assert per_module[""] == 2 * heads * n * n * (dim // heads)  # q @ k^T and attn @ v


def test_multihead_attention_macs_equal_hand_count():
    n, dim = 6, 16
    mha = nn.MultiheadAttention(dim, 4, batch_first=True)
    x = torch.zeros(1, n, dim)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    assert count_macs(Wrap(), x) == 4 * n * dim * dim + 2 * n * n * dim  # in/out projections + two matmuls


def test_module_macs_are_exclusive_and_sum_to_total():
    model = create_model("test_resnet")
    x = torch.zeros(1, 3, 16, 16)
    per = module_macs(model, x)
    assert sum(per.values()) == count_macs(model, x)
    assert per["layer1"] == 0 and per["layer1.0.conv1"] > 0  # containers hold no work of their own


def test_profile_totals_and_sparse_macs():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 4))
    with torch.no_grad():
        model[0].weight[:, :5] = 0  # half of the first layer's weights
    p = profile(model, torch.zeros(3, 10), latency=False)
    assert p.params == 10 * 20 + 20 + 20 * 4 + 4
    assert p.nonzero_params == p.params - 100
    assert p.macs == 10 * 20 + 20 * 4  # per example, not per batch of 3
    assert p.sparse_macs == 10 * 20 // 2 + 20 * 4
    row = next(layer for layer in p.layers if layer.name == "0")
    assert row.density == 0.5 and row.output_shape == [20]


def _convnet(width):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 10),
    )


def test_profile_of_hand_pruned_model_shows_fewer_macs():
    x = torch.zeros(1, 3, 16, 16)
    dense, pruned = profile(_convnet(32), x, latency=False), profile(_convnet(16), x, latency=False)
    # halving every width cuts the inner conv's MACs 4x and the others 2x
    assert dense.macs == 256 * (32 * 27 + 32 * 32 * 9) + 32 * 10
    assert pruned.macs == 256 * (16 * 27 + 16 * 16 * 9) + 16 * 10
    assert dense.macs / pruned.macs > 3.5 and dense.params > pruned.params
    assert dense.size_bytes > pruned.size_bytes


def test_profile_of_reference_cnn1d():
    p = profile(create_model("cnn1d"), torch.zeros(1, 1, 40), latency=False)
    assert p.macs == 40 * 32 * 5 + 2 * 40 * 32 * 32 * 5 + 1280 * 10
    assert "total:" in p.to_table() and "features.3" in p.to_table()


def _hook_count(model, x):
    """An independent count from layer formulas: conv/linear from their shapes, attention from its sizes."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        per_example = out[0].numel()  # outputs of one example
        if isinstance(mod, nn.Conv1d | nn.Conv2d):
            total += per_example * (mod.in_channels // mod.groups) * int(torch.tensor(mod.kernel_size).prod())
        elif isinstance(mod, nn.Linear):
            total += per_example * mod.in_features
        elif isinstance(mod, Attention):
            n = inp[0].shape[1]
            total += 2 * mod.num_heads * n * n * mod.head_dim

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total


FORMULA_MODELS = ["test_mlp", "test_cnn1d", "test_cnn2d", "test_resnet", "test_resnet1d", "test_vgg",
                  "test_mobilenetv2", "test_densenet", "test_vit", "cnn1d", "resnet20", "vit"]  # fmt: skip


@pytest.mark.parametrize("name", FORMULA_MODELS)
def test_macs_match_an_independent_formula_count_on_reference_models(name):
    model = create_model(name)
    x = torch.randn(1, *model.effdl_spec["input_shape"])
    assert count_macs(model, x) == _hook_count(model, x)


class _Twice(nn.Module):
    """One Linear registered under two names and applied twice (weight tying)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = self.a

    def forward(self, x):
        return self.b(self.a(x))


def test_tied_parameters_count_once_and_reused_layers_count_per_call():
    prof = profile(_Twice(), torch.zeros(1, 4), latency=False)
    assert prof.params == 20
    assert prof.macs == 2 * 16


def test_density_follows_the_effective_weight_of_torch_pruned_layers():
    layer = nn.Linear(10, 10)
    torch.nn.utils.prune.l1_unstructured(layer, "weight", amount=0.3)  # weight becomes weight_orig * weight_mask
    prof = profile(nn.Sequential(layer), torch.zeros(1, 10), latency=False)
    row = next(r for r in prof.layers if r.name == "0")
    assert row.density == pytest.approx(0.7)
    assert row.sparse_macs == 70
