import pytest
import torch
from torch import nn

from effdl.core.checkpoint import save_checkpoint
from effdl.core.errors import CheckpointError, ConfigError
from effdl.prune import (
    GradualMagnitudePruning,
    KeepSparsity,
    MagnitudePruneConfig,
    cubic_sparsity,
    load_sparse_state_dict,
    magnitude_masks,
    prune_,
    save_sparse,
    sparsity_of,
)
from effdl.train import TrainConfig, Trainer


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))


def _data(n=128):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=g)
    return torch.utils.data.TensorDataset(x, (x[:, 0] + x[:, 1] > 0).long())


def test_layerwise_reaches_sparsity_in_every_layer():
    masks = magnitude_masks(_net(), MagnitudePruneConfig(ratio=0.75, scope="layer"))
    for m in masks.values():
        assert abs(1 - m.float().mean().item() - 0.75) < 1 / m.numel() + 1e-9


def test_global_uses_one_threshold():
    model = _net()
    with torch.no_grad():
        model[0].weight.copy_(torch.full_like(model[0].weight, 5.0))  # the first layer dominates the global ranking
    masks = magnitude_masks(model, MagnitudePruneConfig(ratio=0.5, scope="global"))
    assert masks["0"].all() and sparsity_of(masks) == pytest.approx(0.5, abs=1e-3)
    kept = torch.cat([model.get_submodule(k).weight.detach().abs()[m] for k, m in masks.items()])
    dropped = torch.cat([model.get_submodule(k).weight.detach().abs()[~m] for k, m in masks.items()])
    assert kept.min() >= dropped.max()


def test_prune_report_and_per_layer_override():
    model = _net()
    r = prune_(
        model, MagnitudePruneConfig(ratio=0.8, scope="layer", per_layer={"4": 0.0}), example_inputs=torch.zeros(1, 8)
    )
    assert r.after.nonzero_params < r.before.nonzero_params
    assert (model[4].weight != 0).all()
    assert (model[0].weight == 0).float().mean().item() == pytest.approx(0.8, abs=0.01)


def test_bad_sparsity():
    with pytest.raises(ConfigError, match=r"ratio must be in \[0.0, 1.0\)"):
        MagnitudePruneConfig(ratio=1.0)
    with pytest.raises(ConfigError, match="scope must be one of"):
        MagnitudePruneConfig(scope="model")


def test_masks_kept_through_finetuning():
    model = _net()
    prune_(model, MagnitudePruneConfig(ratio=0.7), example_inputs=torch.zeros(1, 8))
    zeros = {k: (m.weight == 0).clone() for k, m in model.named_modules() if isinstance(m, nn.Linear)}
    cfg = TrainConfig(
        epochs=2, batch_size=16, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=1e-3, progress=False
    )
    Trainer(model, cfg, callbacks=[KeepSparsity()]).fit(_data())
    for k, z in zeros.items():
        assert (model.get_submodule(k).weight[z] == 0).all()
    without = _net()
    prune_(without, MagnitudePruneConfig(ratio=0.7), example_inputs=torch.zeros(1, 8))
    z = (without[0].weight == 0).clone()
    Trainer(without, cfg).fit(_data())
    assert (without[0].weight[z] != 0).float().mean() > 0.5  # without the callback the zeros come back


def test_cubic_schedule_and_gradual_callback():
    assert cubic_sparsity(0, final=0.8, start=10, end=20) == 0.0
    assert cubic_sparsity(15, final=0.8, start=10, end=20) == pytest.approx(0.8 - 0.8 * 0.5**3)
    model = _net()
    cb = GradualMagnitudePruning(MagnitudePruneConfig(ratio=0.8), end_fraction=0.5, every=2)
    cfg = TrainConfig(epochs=4, batch_size=16, lr=0.05, progress=False)
    Trainer(model, cfg, callbacks=[cb]).fit(_data())
    assert cb.current == pytest.approx(0.8)
    assert sparsity_of(cb.masks) == pytest.approx(0.8, abs=0.01)


def test_sparse_storage_shrinks_with_sparsity_and_round_trips(tmp_path):
    sizes = {}
    for s in (0.0, 0.5, 0.9):
        model = nn.Linear(256, 256)
        if s:
            prune_(model, MagnitudePruneConfig(ratio=s), example_inputs=torch.zeros(1, 256))
        path = save_sparse(model, tmp_path / f"s{s}.safetensors")
        sizes[s] = path.stat().st_size
        sd = load_sparse_state_dict(path)
        assert torch.equal(sd["weight"], model.weight.detach()) and torch.equal(sd["bias"], model.bias.detach())
    assert sizes[0.9] < sizes[0.5] < sizes[0.0]
    assert sizes[0.0] / sizes[0.9] > 6  # 4 bytes vs 0.1 * 4 + 1/8 per weight


def test_corrupt_sparse_file(tmp_path):
    path = save_checkpoint(
        tmp_path / "bad.safetensors",
        {"w::bitmap": torch.tensor([255], dtype=torch.uint8), "w::values": torch.ones(3)},
        {"sparse_shapes": {"w": [8]}},
    )
    with pytest.raises(CheckpointError, match="bitmap marks 8 weights but it holds 3"):
        load_sparse_state_dict(path)
