import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from effdl.compress import find_lottery_ticket
from effdl.core.errors import ConfigError
from effdl.data import DatasetSplits
from effdl.models import create_model
from effdl.prune import (
    EarlyBird,
    LotteryTicketConfig,
    RewindPoint,
    SensitivityResult,
    prune_,
    reinitialize_,
    sensitivity_analysis,
)
from effdl.train import TrainConfig, Trainer, evaluate


def _splits(n=256):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2 * n, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return DatasetSplits("toy", TensorDataset(x[:n], y[:n]), TensorDataset(x[n:], y[n:]), (8,), 2)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 2))


CFG = TrainConfig(epochs=3, batch_size=32, lr=0.05, progress=False)


def test_rewind_point_captures_the_right_step():
    model = _net()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    at0, at3 = RewindPoint(0), RewindPoint(3)
    Trainer(model, CFG, callbacks=[at0, at3]).fit(_splits().train)
    assert all(torch.equal(at0.state[k], init[k]) for k in init)
    assert not torch.equal(at3.state["0.weight"], init["0.weight"])
    assert not torch.equal(at3.state["0.weight"], model.state_dict()["0.weight"])


def test_imp_rounds_reach_sparsity_and_rewind(tmp_path):
    data = _splits()
    model = _net()
    cfg = LotteryTicketConfig(rounds=2, ratio=0.5, rewind_step=2)
    result = find_lottery_ticket(model, data, CFG, cfg, out_dir=tmp_path)
    assert [r["round"] for r in result.rounds] == [0, 1, 2]
    assert result.rounds[2]["sparsity"] == pytest.approx(0.75, abs=0.01)
    # the ticket keeps exactly the mask's zeros
    for name, mask in result.masks.items():
        assert (model.get_submodule(name).weight[~mask] == 0).all()
    assert result.rounds[2]["accuracy"] > 0.8
    assert json.loads((tmp_path / "lottery.json").read_text())["rounds"] == result.rounds
    # resuming a finished search redoes nothing and returns the same numbers
    again = find_lottery_ticket(_net(), data, CFG, cfg, out_dir=tmp_path, resume=True)
    assert again.rounds == result.rounds


def test_rewind_step_beyond_run_is_an_error():
    with pytest.raises(ConfigError, match="rewind_step=10000 is beyond"):
        find_lottery_ticket(_net(), _splits(), CFG, LotteryTicketConfig(rounds=1, rewind_step=10000))


def test_reinitialize_draws_new_weights_reproducibly():
    a, b = _net(), _net()
    reinitialize_(a, seed=7)
    reinitialize_(b, seed=7)
    assert torch.equal(a[0].weight, b[0].weight) and not torch.equal(a[0].weight, _net()[0].weight)


def test_early_bird_stops_when_masks_settle():
    torch.manual_seed(0)
    model = create_model("test_cnn1d")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1, 40, generator=g)
    y = (x.mean(dim=(1, 2)) > 0).long()
    eb = EarlyBird(x[:2], ratio=0.5, threshold=0.3, window=2)
    cfg = TrainConfig(epochs=30, batch_size=32, lr=1e-3, progress=False)
    trainer = Trainer(model, cfg, callbacks=[eb])
    trainer.fit(TensorDataset(x, y))
    assert eb.found_epoch is not None and trainer.epoch == eb.found_epoch < 30
    assert len(eb.distances) == eb.found_epoch - 1
    assert max(eb.distances[-2:]) < 0.3
    never = EarlyBird(x[:2], ratio=0.5, threshold=0.0, window=2)  # can never settle below 0
    t2 = Trainer(create_model("test_cnn1d"), cfg.replace(epochs=3), callbacks=[never])
    t2.fit(TensorDataset(x, y))
    assert never.found_epoch is None and t2.epoch == 3


def test_sensitivity_curves_table_ratios_and_plot(tmp_path):
    data = _splits()
    model = _net()
    Trainer(model, CFG).fit(data.train)
    res = sensitivity_analysis(model, data.test, torch.zeros(1, 8), ratios=(0.25, 0.5, 0.95))
    assert list(res.curves) == ["0"]
    assert res.baseline == evaluate(model, data.test)["accuracy"]
    accs = [a for _, a in res.curves["0"]]
    assert accs[-1] < res.baseline  # removing 95% of the hidden units hurts
    assert "group" in res.to_table()
    cfg = res.to_config(tolerance=1.0)
    assert cfg.per_layer == {"0": 0.95}
    prune_(model, cfg, example_inputs=torch.zeros(1, 8))
    assert model[0].out_features == 4
    path = res.plot(tmp_path / "s.png")
    assert path.stat().st_size > 1000


def test_ratios_for_stops_at_first_violation():
    r = SensitivityResult(0.9, {"a": [(0.2, 0.9), (0.4, 0.85), (0.6, 0.9)], "b": [(0.2, 0.5)]})
    assert r.ratios_for(0.01) == {"a": 0.2}


def test_bad_ratios():
    with pytest.raises(ConfigError, match=r"ratios must each be in \(0, 1\)"):
        sensitivity_analysis(_net(), _splits().test, torch.zeros(1, 8), ratios=(0.5, 1.0))
