import pytest
import torch
from torch import nn

from effdl.core.errors import ConfigError
from effdl.prune import DynamicSparseTraining, DynamicSparsityConfig, erk_densities
from effdl.train import TrainConfig, Trainer


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))


def _data(n=256):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=g)
    return torch.utils.data.TensorDataset(x, (x[:, 0] * x[:, 1] > 0).long())


def test_erk_meets_overall_density_and_favours_small_layers():
    shapes = {"a": (64, 8), "b": (64, 64), "c": (2, 64), "conv": (32, 16, 3, 3)}
    d = erk_densities(shapes, 0.9)
    total = sum(torch.tensor(s).prod().item() for s in shapes.values())
    kept = sum(d[k] * torch.tensor(s).prod().item() for k, s in shapes.items())
    assert kept / total == pytest.approx(0.1, rel=1e-6)
    assert d["b"] < d["a"] and all(0 < v <= 1 for v in d.values())


@pytest.mark.parametrize("method", ["rigl", "set", "static"])
def test_sparsity_held_and_connections_move(method):
    model = _net()
    cb = DynamicSparseTraining(DynamicSparsityConfig(method=method, ratio=0.8, update_every=4, drop_fraction=0.3))
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05, optimizer="sgd", momentum=0.9, progress=False)
    Trainer(model, cfg, callbacks=[cb]).fit(_data())
    initial = DynamicSparseTraining(cb.config)
    initial.init_masks(_net())
    assert cb.sparsity == pytest.approx(0.8, abs=0.01)
    for name, mask in cb.masks.items():
        w = model.get_submodule(name).weight
        assert (w[~mask] == 0).all()
    moved = sum(int((cb.masks[k] != initial.masks[k]).sum()) for k in cb.masks)
    if method == "static":
        assert moved == 0 and cb.updates == 0
    else:
        assert moved > 0 and cb.updates > 0


def test_rigl_grows_where_gradient_is_large():
    model = nn.Linear(4, 1, bias=False)
    cb = DynamicSparseTraining(DynamicSparsityConfig(method="rigl", ratio=0.5, update_every=1, drop_fraction=0.9))
    cb.masks = {"": torch.tensor([[True, True, False, False]])}
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.01, 0.0, 0.0]]))

    class T:  # the parts of the Trainer the callback reads
        step, total_steps, optimizer = 0, 100, None

    T.model = model
    model.weight.grad = torch.tensor([[0.0, 0.0, 0.1, 5.0]])
    cb.on_after_backward(T)
    cb.on_batch_end(T, None, 0.0)
    assert cb.masks[""].tolist() == [[True, False, False, True]]  # dropped the smallest weight, grew the largest grad


def test_resume_is_exact(tmp_path):
    from effdl.train import Callback

    cfg = TrainConfig(epochs=4, batch_size=16, lr=0.05, progress=False)
    dst = DynamicSparsityConfig(method="set", ratio=0.8, update_every=3)
    ref = _net()
    Trainer(ref, cfg, callbacks=[DynamicSparseTraining(dst)]).fit(_data())

    class Crash(Exception):
        pass

    class CrashAfter2(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == 2:
                raise Crash

    with pytest.raises(Crash):
        Trainer(_net(), cfg, callbacks=[DynamicSparseTraining(dst), CrashAfter2()], out_dir=tmp_path).fit(_data())
    resumed = _net()
    cb = DynamicSparseTraining(dst)
    Trainer(resumed, cfg, callbacks=[cb], out_dir=tmp_path).fit(_data(), resume=True)
    assert cb.updates > 0
    for a, b in zip(ref.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bad_config():
    with pytest.raises(ConfigError, match="method must be one of"):
        DynamicSparsityConfig(method="snip")
    with pytest.raises(ConfigError, match="ratio must be in"):
        DynamicSparsityConfig(ratio=1.0)
