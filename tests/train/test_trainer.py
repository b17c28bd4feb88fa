import csv

import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from effdl.core import CheckpointError, ConfigError, load_checkpoint
from effdl.data import get_dataset
from effdl.models import create_model
from effdl.train import Callback, TrainConfig, Trainer, build_optimizer, build_scheduler, evaluate
from tests.helpers import Crash, CrashAt


def _data(n=384):
    d = get_dataset("mnist1d")
    return Subset(d.train, range(n)), Subset(d.test, range(200))


def _dropout_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(40, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10))


def _rows(path):
    with path.open() as fh:
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(fh)]


@pytest.mark.parametrize(
    ("make_model", "crash_step", "every"),
    [
        (lambda: create_model("test_cnn1d"), 17, 0),  # killed mid-epoch 2: resumes from the end of epoch 1
        (lambda: create_model("test_cnn1d"), 20, 4),  # killed just after a mid-epoch checkpoint
        (_dropout_net, 27, 5),  # dropout: the RNG state must be restored too
    ],
)
def test_resume_after_kill_is_bit_identical(tmp_path, make_model, crash_step, every):
    from effdl.train import CSVLogger

    train, test = _data()
    cfg = TrainConfig(epochs=3, batch_size=32, lr=3e-3, checkpoint_every_steps=every, progress=False, seed=5)

    torch.manual_seed(0)
    reference = make_model()
    Trainer(reference, cfg, out_dir=tmp_path / "a", callbacks=[CSVLogger(tmp_path / "a.csv")]).fit(train, test)

    torch.manual_seed(0)
    crashed = make_model()
    with pytest.raises(Crash):
        Trainer(
            crashed, cfg, out_dir=tmp_path / "b", callbacks=[CSVLogger(tmp_path / "b.csv"), CrashAt(crash_step)]
        ).fit(train, test)

    torch.manual_seed(123)  # a different initialization: the weights must come from the checkpoint
    resumed = make_model()
    result = Trainer(resumed, cfg, out_dir=tmp_path / "b", callbacks=[CSVLogger(tmp_path / "b.csv")]).fit(
        train, test, resume=True
    )
    ref_state, res_state = reference.state_dict(), resumed.state_dict()
    assert all(torch.equal(ref_state[k], res_state[k]) for k in ref_state)
    assert result.final["step"] == 3 * 12
    assert _rows(tmp_path / "a.csv") == _rows(tmp_path / "b.csv")


def test_training_improves_accuracy_and_checkpoint_holds_everything(tmp_path):
    train, test = _data(1000)
    model = create_model("test_cnn1d")
    before = evaluate(model, test)["accuracy"]
    cfg = TrainConfig(epochs=4, batch_size=32, lr=1e-2, progress=False)
    result = Trainer(model, cfg, out_dir=tmp_path).fit(train, test)
    assert result.final["eval_accuracy"] > max(before, 0.3)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    tensors, meta = load_checkpoint(tmp_path / "checkpoints" / "last.safetensors")
    assert meta["kind"] == "train_state" and meta["position"] == {"epoch": 4, "step": 128, "batch_in_epoch": 0}
    assert any(k.startswith("optim.") for k in tensors) and "rng.torch" in tensors


def test_eval_every_keeps_metric_columns_and_fit_twice_starts_over(tmp_path):
    from effdl.train import CSVLogger

    train, test = _data(64)
    cfg = TrainConfig(epochs=3, batch_size=32, eval_every=2, progress=False)
    trainer = Trainer(create_model("test_mlp"), cfg, callbacks=[CSVLogger(tmp_path / "m.csv")])
    result = trainer.fit(train, test)
    assert [h["eval_accuracy"] is None for h in result.history] == [True, False, False]  # epochs 2 and 3 (last)
    rows = _rows(tmp_path / "m.csv")
    assert [r["eval_accuracy"] == "" for r in rows] == [True, False, False]
    again = trainer.fit(train, test)
    assert [h["epoch"] for h in again.history] == [1, 2, 3]


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    train, _ = _data(64)
    cfg = TrainConfig(epochs=1, batch_size=32, progress=False)
    Trainer(create_model("test_cnn1d"), cfg, out_dir=tmp_path).fit(train)
    with pytest.raises(CheckpointError, match="does not match this model"):
        Trainer(create_model("test_mlp"), cfg.replace(epochs=2), out_dir=tmp_path).fit(train, resume=True)
    with pytest.raises(ConfigError, match="resume=True needs out_dir"):
        Trainer(create_model("test_mlp"), cfg).fit(train, resume=True)


def test_callbacks_see_every_hook_in_order():
    events = []

    class Spy(Callback):
        def on_fit_start(self, trainer):
            events.append("fit_start")

        def on_epoch_start(self, trainer, epoch):
            events.append("epoch_start")

        def on_loss(self, trainer, batch, outputs, loss):
            events.append("loss")
            return loss * 0.0  # replacing the loss must take effect

        def on_after_backward(self, trainer):
            events.append("backward")
            assert all(p.grad is None or not p.grad.any() for p in trainer.model.parameters())

        def on_batch_end(self, trainer, batch, loss):
            events.append("batch_end")

        def on_epoch_end(self, trainer, epoch, metrics):
            events.append("epoch_end")

        def on_fit_end(self, trainer):
            events.append("fit_end")

    model = nn.Linear(4, 2)
    start = model.weight.detach().clone()
    ds = TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    Trainer(model, TrainConfig(epochs=1, batch_size=4, optimizer="sgd", lr=0.1, progress=False), callbacks=[Spy()]).fit(
        ds
    )
    assert events == ["fit_start", "epoch_start"] + ["loss", "backward", "batch_end"] * 2 + ["epoch_end", "fit_end"]
    assert torch.equal(model.weight, start)  # zero loss, no weight decay: nothing moved


def test_config_validation_messages():
    with pytest.raises(ConfigError, match="optimizer must be one of 'sgd', 'adam', 'adamw', got optimizer='lion'"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ConfigError, match="epochs must be in"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0)
    assert TrainConfig.from_dict(TrainConfig(lr=0.5, grad_clip=1.0).to_dict()) == TrainConfig(lr=0.5, grad_clip=1.0)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizers_and_cosine_schedule(name):
    model = nn.Linear(2, 2)
    cfg = TrainConfig(optimizer=name, lr=0.1, epochs=2, weight_decay=0.01)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and lrs[4] == pytest.approx(0.05)
    assert opt.param_groups[0]["weight_decay"] == 0.01


def test_label_smoothing_changes_the_loss():
    ds = TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    losses = []
    for ls in (0.0, 0.2):
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        r = Trainer(model, TrainConfig(epochs=1, batch_size=16, label_smoothing=ls, progress=False)).fit(ds)
        losses.append(r.final["train_loss"])
    assert losses[0] != losses[1]


@pytest.mark.parametrize("data_name", ["mnist1d", "digits"])
@pytest.mark.parametrize(
    "model_name",
    ["test_mlp", "test_cnn1d", "test_resnet1d", "test_resnet", "test_vgg", "test_mobilenetv2", "test_densenet",
     "test_vit"],
)  # fmt: skip
def test_every_test_model_trains_on_every_embedded_dataset(model_name, data_name):
    from effdl.train import train_model

    data = get_dataset(data_name)
    data.train = Subset(data.train, range(96))
    data.test = Subset(data.test, range(32))
    outcome = train_model(model_name, data, TrainConfig(epochs=1, batch_size=32, progress=False))
    assert outcome.report.summary.params > 0
    assert 0.0 <= outcome.report.summary.accuracy <= 1.0


def test_tensorboard_logger_writes_scalars(tmp_path, monkeypatch):
    """The logger's own logic, with a stand-in SummaryWriter (the tensorboard package is an optional extra)."""
    import sys
    import types

    from effdl.train import TensorBoardLogger

    written = []

    class FakeWriter:
        def __init__(self, log_dir):
            written.append(("dir", log_dir))

        def add_scalar(self, key, value, step):
            written.append((key, step))

        def flush(self):
            pass

        def close(self):
            written.append(("closed", None))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    train, test = _data(64)
    cfg = TrainConfig(epochs=2, batch_size=32, progress=False)
    Trainer(create_model("test_mlp"), cfg, callbacks=[TensorBoardLogger(tmp_path / "tb")]).fit(train, test)
    assert written[0] == ("dir", str(tmp_path / "tb"))
    assert ("eval_accuracy", 2) in written and ("train_loss", 1) in written and written[-1] == ("closed", None)
    assert all(key != "epoch" for key, _ in written)


def test_language_model_learns_and_reports_per_token_figures():
    from effdl.train import train_model

    data = get_dataset("pysource", seq_len=16, train_bytes=20_000, test_sequences=32)
    outcome = train_model("test_gpt", data, TrainConfig(epochs=2, batch_size=32, lr=1e-2, progress=False))
    first, last = outcome.history[0], outcome.history[-1]
    assert last["train_loss"] < 3.5 < 5.545  # below the uniform guess over 256 bytes, ln 256
    s = outcome.report.summary
    assert s.perplexity == pytest.approx(2.718281828 ** s.loss, rel=1e-6)
    assert 0.15 < s.accuracy < 1.0 and first["train_accuracy"] <= 1.0
    ev = evaluate(outcome.model, data.test)  # per token: the mean over 32 x 16 predictions
    x, y = data.test[:]
    with torch.no_grad():
        ref = nn.functional.cross_entropy(outcome.model.eval()(x), y)
    assert ev["loss"] == pytest.approx(float(ref), rel=1e-5)
