import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset, TensorDataset

from effdl.core import ConfigError, ShapeError
from effdl.data import get_dataset
from effdl.distill import Distillation, DistillConfig, hint_loss, kd_loss
from effdl.models import create_model
from effdl.train import TrainConfig, Trainer, evaluate
from tests.helpers import Crash, CrashAt


def test_kd_loss_matches_the_definition():
    torch.manual_seed(0)
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    T = 3.0
    p_t = F.softmax(t / T, dim=1)
    manual = (p_t * (p_t.log() - F.log_softmax(s / T, dim=1))).sum(1).mean() * T**2
    torch.testing.assert_close(kd_loss(s, t, T), manual)
    assert float(kd_loss(t, t, T)) == pytest.approx(0.0, abs=1e-6)
    # the teacher gets no gradient
    t.requires_grad_(True)
    s.requires_grad_(True)
    kd_loss(s, t, T).backward()
    assert t.grad is None and s.grad is not None


def test_losses_reject_mismatched_shapes():
    with pytest.raises(ShapeError, match="teacher's classes"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ShapeError, match="same spatial size"):
        hint_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))


def _data(n=600):
    d = get_dataset("mnist1d")
    return Subset(d.train, range(n)), Subset(d.test, range(300))


def _agreement(a, b, data):
    x = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        return float((a.eval()(x).argmax(1) == b.eval()(x).argmax(1)).float().mean())


def test_alpha_one_trains_on_the_teacher_alone():
    # with alpha=1 the labels are ignored: a student trained on random labels still learns the teacher
    train, test = _data()
    torch.manual_seed(0)
    teacher = create_model("test_cnn1d")
    Trainer(teacher, TrainConfig(epochs=4, lr=1e-2, progress=False)).fit(train)
    x = torch.stack([train[i][0] for i in range(len(train))])
    noise = TensorDataset(x, torch.randint(0, 10, (len(train),), generator=torch.Generator().manual_seed(0)))
    student = create_model("test_cnn1d")
    cb = Distillation(teacher, DistillConfig(alpha=1.0, temperature=2.0))
    Trainer(student, TrainConfig(epochs=6, lr=1e-2, progress=False), callbacks=[cb]).fit(noise)
    assert all(p.requires_grad for p in teacher.parameters())  # the teacher is not frozen behind the user's back
    assert _agreement(student, teacher, test) > 0.6
    assert evaluate(student, test)["accuracy"] > evaluate(teacher, test)["accuracy"] - 0.1


def test_hints_train_a_regressor_and_resume_exactly(tmp_path):
    train, _ = _data(256)
    torch.manual_seed(0)
    teacher = create_model("test_cnn1d", channels=(8, 8))
    cfg = TrainConfig(epochs=2, batch_size=32, lr=3e-3, progress=False, seed=3)
    dcfg = DistillConfig(alpha=0.5, hints={"features.0": "features.0"})

    torch.manual_seed(1)
    ref = create_model("test_cnn1d")
    cb = Distillation(teacher, dcfg)
    Trainer(ref, cfg, out_dir=tmp_path / "a", callbacks=[cb]).fit(train)
    assert isinstance(cb.adapters["features__0"], nn.Conv1d)  # student channels -> teacher channels
    assert "hint" in cb.last

    torch.manual_seed(1)
    crashed = create_model("test_cnn1d")
    with pytest.raises(Crash):
        Trainer(crashed, cfg, out_dir=tmp_path / "b", callbacks=[Distillation(teacher, dcfg), CrashAt(11)]).fit(train)
    resumed = create_model("test_cnn1d")
    cb2 = Distillation(teacher, dcfg)
    Trainer(resumed, cfg, out_dir=tmp_path / "b", callbacks=[cb2]).fit(train, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), resumed.state_dict().values(), strict=True))
    assert torch.equal(cb.adapters["features__0"].weight, cb2.adapters["features__0"].weight)


def test_bad_hints_and_config():
    with pytest.raises(ConfigError, match="alpha must be in"):
        DistillConfig(alpha=2.0)
    with pytest.raises(ConfigError, match=r"must be an nn\.Module"):
        Distillation("teacher")
    train, _ = _data(64)
    cb = Distillation(create_model("test_cnn1d"), DistillConfig(hints={"nope": "features.0"}))
    with pytest.raises(ConfigError, match="'nope' is not a module of the student"):
        Trainer(create_model("test_cnn1d"), TrainConfig(epochs=1, progress=False), callbacks=[cb]).fit(train)
