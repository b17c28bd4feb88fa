"""Non-finite values never pass silently: a NaN in the data or an infinite learning rate stops training with a clear
error and the last finite checkpoint intact; reports write null instead of NaN; recipes refuse YAML aliases."""

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from effdl.core import ConfigError, load_checkpoint
from effdl.core.errors import NonFiniteError
from effdl.core.io import atomic_write_json, load_yaml
from effdl.core.recipe import Recipe
from effdl.train import TrainConfig, Trainer


def data(nan_at=None, n=64):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g)
    if nan_at is not None:
        x[nan_at, 0] = float("nan")
    return TensorDataset(x, y)


def test_nan_in_the_data_stops_training_and_keeps_the_last_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    trainer = Trainer(model, TrainConfig(epochs=1, batch_size=16, progress=False), out_dir=tmp_path)
    trainer.fit(data())  # one good epoch: a checkpoint
    checkpoint = trainer.checkpoint_path
    saved = checkpoint.read_bytes()
    trainer2 = Trainer(model, TrainConfig(epochs=2, batch_size=16, progress=False), out_dir=tmp_path)
    with pytest.raises(NonFiniteError, match=r"training loss became nan at step \d+.*check the data for NaN"):
        trainer2.fit(data(nan_at=40))
    for k, v in model.state_dict().items():  # stopped before the update: the weights are finite
        assert torch.isfinite(v).all(), k
    assert checkpoint.read_bytes() == saved  # the NaN came before the first checkpoint of the new run
    state, _ = load_checkpoint(checkpoint)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_an_infinite_learning_rate_is_refused_up_front():
    with pytest.raises(ConfigError, match="lr must be in"):
        TrainConfig(lr=float("inf"))


def test_weights_that_blow_up_are_never_checkpointed(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    trainer = Trainer(model, TrainConfig(epochs=1, batch_size=16, progress=False), out_dir=tmp_path)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="parameter 'weight' became NaN or infinite"):
        trainer.save_checkpoint()


def test_reports_write_null_for_nan(tmp_path):
    path = atomic_write_json(tmp_path / "r.json", {"accuracy": float("nan"), "rows": [float("-inf"), 1.5]})
    assert json.loads(path.read_text()) == {"accuracy": None, "rows": [None, 1.5]}
    assert "NaN" not in path.read_text()


def test_yaml_alias_bombs_are_refused_fast(tmp_path):
    pairs = zip("abcdefgh", "bcdefghi", strict=True)
    lines = [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in pairs]  # 9^9 ones once expanded
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(lines)
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    with pytest.raises(ConfigError, match=r"uses a YAML alias \(\*a\)"):
        Recipe.load(path)
    with pytest.raises(ConfigError, match="over the"):
        load_yaml("x" * (2 << 20))


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--nproc", "0"],
        ["train", "--nproc", "-2"],
        ["train", "--snapshot-every", "0"],
        ["nas", "eval", "--limit", "0"],
        ["prune", "--checkpoint", "x.safetensors", "--sensitivity", "-1"],
        ["unroll", "train", "--layers", "0"],
    ],
)
def test_zero_or_negative_is_never_a_silent_off(argv, capsys):
    from effdl.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "must be a positive integer" in err or "must be a finite number >= 0" in err
    assert "Traceback" not in err


def test_transforms_refuse_non_finite_weights_and_inputs():
    from effdl.prune import L1FilterPruneConfig, prune_
    from effdl.quant import QuantConfig, quantize_

    model = nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
    x = torch.randn(4, 1, 8)
    with torch.no_grad():
        model[0].weight[3, 0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteError, match=r"0\.weight holds NaN"):
        prune_(model, L1FilterPruneConfig(ratio=0.5), example_inputs=x)
    with pytest.raises(NonFiniteError, match=r"0\.weight holds NaN"):
        quantize_(model, QuantConfig(), example_inputs=x)
    after = model.state_dict()  # refused before anything changed
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k].nan_to_num(), after[k].nan_to_num()) for k in before)
    clean = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(NonFiniteError, match="example input 0"):
        quantize_(clean, QuantConfig(), example_inputs=torch.tensor([[1.0, float("inf"), 0.0, 0.0]]))
