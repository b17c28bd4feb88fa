"""One-shot pruning: N:M patterns are exact, Wanda and SparseGPT lose less than magnitude on calibration data,
fine-tuning keeps the zeros, and bad settings get clear errors."""

import copy

import pytest
import torch
from torch import nn

from effdl.compress import FinetuneConfig
from effdl.core import apply_
from effdl.core.errors import ConfigError, UnsupportedError
from effdl.data import DatasetSplits
from effdl.models import create_model, example_batch
from effdl.prune import MagnitudePruneConfig, SparseGPTConfig, WandaConfig, prune_


def _is_n_m(w: torch.Tensor, n: int, m: int) -> bool:
    groups = (w.reshape(w.shape[0], -1, m) != 0).sum(-1)
    return bool((groups <= n).all())


def _outlier_data(k=64, n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g)
    x[:, :3] *= 25.0  # a few input features carry most of the signal (Wanda's motivating case)
    return x


@pytest.mark.parametrize(
    "config",
    [WandaConfig(n_m=(2, 4)), SparseGPTConfig(n_m=(2, 4)), SparseGPTConfig(ratio=0.5, n_m=(4, 8)),
     MagnitudePruneConfig(n_m=(2, 4), scope="layer"), WandaConfig(ratio=0.75, n_m=(1, 4))],
    ids=lambda c: c.describe(),
)  # fmt: skip
def test_n_m_patterns_are_exact(config):
    model = create_model("test_gpt").eval()
    x = example_batch(model, 4)
    prune_(model, config, example_inputs=x, data=[(example_batch(model, 4, seed=s),) for s in range(2)])
    n, m = config.n_m
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Linear):
            assert _is_n_m(layer.weight, n, m), name
            assert float((layer.weight == 0).float().mean()) == pytest.approx(1 - n / m, abs=0.01), name


def test_wanda_and_sparsegpt_lose_less_than_magnitude_and_hit_the_ratio():
    x = _outlier_data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
    with torch.no_grad():
        ref = model(x)
    batches = [(x[i : i + 64],) for i in range(0, 256, 64)]
    errs = {}
    for cfg in [MagnitudePruneConfig(ratio=0.5, scope="layer"), WandaConfig(ratio=0.5), SparseGPTConfig(ratio=0.5)]:
        m = copy.deepcopy(model)
        report = prune_(m, cfg, example_inputs=x[:2], data=batches)
        assert float((m[0].weight == 0).float().mean()) == pytest.approx(0.5, abs=0.02)
        with torch.no_grad():
            errs[type(cfg).__name__] = float((m(x) - ref).norm() / ref.norm())
        if cfg.describe().startswith("prune wanda"):
            assert report.details["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert errs["WandaConfig"] < errs["MagnitudePruneConfig"]
    assert errs["SparseGPTConfig"] < errs["MagnitudePruneConfig"]


def test_fine_tuning_keeps_the_n_m_pattern():
    torch.manual_seed(0)
    model = create_model("test_gpt").eval()
    x = example_batch(model, 32)
    y = example_batch(model, 32, seed=1)
    ds = torch.utils.data.TensorDataset(x, y)
    splits = DatasetSplits("tokens", ds, ds, (16,), 256, task="language-model")
    before = copy.deepcopy(model)
    apply_(model, [WandaConfig(n_m=(2, 4)), FinetuneConfig(train={"epochs": 2, "lr": 1e-2, "batch_size": 8})],
           example_inputs=x[:2], data=[(x,)], dataset=splits, progress=False)  # fmt: skip
    changed = False
    for (name, layer), old in zip(model.named_modules(), before.modules(), strict=True):
        if isinstance(layer, nn.Linear):
            assert _is_n_m(layer.weight, 2, 4), name
            changed |= not torch.equal(layer.weight, old.weight * (layer.weight != 0))
    assert changed  # the kept weights did train


def test_bad_settings_get_clear_errors():
    with pytest.raises(ConfigError, match=r"N must be in \[1, M\)"):
        WandaConfig(n_m=(4, 4), ratio=0.0)
    with pytest.raises(ConfigError, match=r"pass ratio=0\.75 with it"):
        SparseGPTConfig(n_m=(1, 4))
    with pytest.raises(ConfigError, match="scope='layer'"):
        MagnitudePruneConfig(n_m=(2, 4))
    with pytest.raises(ConfigError, match="multiple of M"):
        SparseGPTConfig(n_m=(2, 3), ratio=1 / 3, block_size=128)
    model = nn.Sequential(nn.Linear(8, 4))
    with pytest.raises(ConfigError, match="wanda prunes from calibration data"):
        prune_(model, WandaConfig(), example_inputs=torch.randn(2, 8))
    with pytest.raises(UnsupportedError, match="no Linear layer"):
        prune_(nn.Sequential(nn.Conv1d(1, 2, 3)), WandaConfig(), example_inputs=torch.randn(1, 1, 8), data=[])
    assert not (model[0].weight == 0).any()
