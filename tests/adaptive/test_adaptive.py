"""Input-adaptive precision: the any-precision network (shared weights, widths that differ only by quantization,
switchable BatchNorm, checkpoints, exact resume), the policy's accounting and inference, and the whole pipeline."""

import math

import pytest
import torch
from torch import nn

from effdl.adaptive import (
    AnyPrecisionConfig,
    AnyPrecisionLayer,
    AnyPrecisionTraining,
    SwitchableBatchNorm,
    any_precision_,
    at_width,
    model_widths,
    set_width_,
    width_bops,
)
from effdl.adaptive.policy import (
    PolicyConfig,
    PrecisionPolicy,
    adaptive_predict,
    clip_predictions,
    difficulty_bands,
    evaluate_policy,
    frame_outputs,
    policy_choices,
    train_policy,
)
from effdl.adaptive.study import AdaptiveStudyConfig, load_policy, run_study, save_policy
from effdl.cli.main import main
from effdl.core.errors import ConfigError, ShapeError
from effdl.data.video import load_mnist1d_video
from effdl.models import create_model, load_model, save_model
from effdl.train import TrainConfig, Trainer
from tests.helpers import Crash, CrashAt


def _converted(widths=(8, 4, 2), end_bits=None, seed=0):
    torch.manual_seed(seed)
    model = create_model("test_cnn1d")
    any_precision_(model, AnyPrecisionConfig(widths=widths, end_bits=end_bits), example_inputs=torch.randn(16, 1, 40))
    return model


def test_one_weight_tensor_per_layer_is_shared_by_every_width():
    float_model = create_model("test_cnn1d")
    model = _converted()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, AnyPrecisionLayer)}
    assert set(layers) == {n for n, m in float_model.named_modules() if isinstance(m, nn.Conv1d | nn.Linear)}
    weights = [n for n, _ in model.named_parameters() if n.endswith(".weight") and ".norms." not in n]
    assert len(weights) == len(layers)  # one weight per layer, whatever the widths
    x = torch.randn(4, 1, 40)
    model.eval()
    before = {}
    for b in (8, 4, 2):
        with at_width(model, b), torch.no_grad():
            before[b] = model(x)
    with torch.no_grad():  # one change to the shared tensor moves every width
        next(iter(layers.values())).layer.weight.mul_(-1)
    for b in (8, 4, 2):
        with at_width(model, b), torch.no_grad():
            assert not torch.allclose(model(x), before[b])


def test_lower_widths_keep_the_most_significant_bits_of_the_top_codes():
    layer = AnyPrecisionLayer(nn.Conv1d(3, 5, 3), (8, 4, 2), signed_input=True)
    with torch.no_grad():
        step = layer.log_weight_step.exp()[:, None, None]
        top = torch.clamp(torch.round(layer.layer.weight / step), -127, 127)  # independent: 8-bit codes
    for bits in (8, 4, 2):
        q = 2 ** (bits - 1) - 1
        expected = torch.clamp(torch.round(top / 2 ** (8 - bits)), -q, q)
        torch.testing.assert_close(layer.integer_weight(bits), expected, atol=0, rtol=0)
        torch.testing.assert_close(layer.quantized_weight(bits).detach(), expected * step * 2 ** (8 - bits))


def test_the_training_callback_sums_every_widths_loss():
    model = _converted().train()
    x, y = torch.randn(6, 1, 40), torch.randint(0, 10, (6,))
    torch.manual_seed(0)
    top = model(x)
    base = torch.nn.functional.cross_entropy(top, y)

    class View:
        pass

    trainer = View()
    trainer.model = model
    torch.manual_seed(0)
    total = AnyPrecisionTraining(distill=0.0, lower=0.5).on_loss(trainer, (x, y), top, base)
    expected = base
    for b in (4, 2):
        with at_width(model, b):
            expected = expected + 0.5 * torch.nn.functional.cross_entropy(model(x), y)
    torch.testing.assert_close(total, expected)


def test_each_width_has_its_own_batchnorm_and_input_steps():
    model = _converted()
    norms = [m for m in model.modules() if isinstance(m, SwitchableBatchNorm)]
    assert norms and all(len(m.norms) == 3 for m in norms)
    model.train()
    x = torch.randn(8, 1, 40)
    with at_width(model, 2):
        model(x)
    stats = [[float(n.running_mean.abs().sum()) for n in m.norms] for m in norms]
    assert all(s[2] > 0 and s[0] == 0 and s[1] == 0 for s in stats)  # only the 2-bit statistics moved
    layer = next(m for m in model.modules() if isinstance(m, AnyPrecisionLayer))
    assert layer.log_input_step.shape == (3,) and len(set(layer.log_input_step.tolist())) == 3


def test_first_and_last_layers_stay_at_end_bits():
    model = _converted(end_bits=8)
    layers = [m for m in model.modules() if isinstance(m, AnyPrecisionLayer)]
    assert layers[0].widths == (8,) and layers[-1].widths == (8,) and layers[1].widths == (8, 4, 2)
    with at_width(model, 2):
        assert [m.current_width() for m in layers] == [8, *[2] * (len(layers) - 2), 8]


def test_bops_per_width_equal_a_hand_count():
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8, 3))
    any_precision_(model, AnyPrecisionConfig(widths=(8, 4), end_bits=None), example_inputs=torch.randn(4, 1, 10))
    conv, linear = 2 * 1 * 3 * 8, 16 * 3  # MACs: 2 filters x 3 taps x 8 positions; 16 x 3
    assert width_bops(model, torch.zeros(1, 1, 10)) == {8: (conv + linear) * 64, 4: (conv + linear) * 16}
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Conv1d(2, 2, 1), nn.Flatten(), nn.Linear(2 * 8, 3))
    any_precision_(model, AnyPrecisionConfig(widths=(8, 4), end_bits=8), example_inputs=torch.randn(4, 1, 10))
    middle = 2 * 2 * 8  # the only layer that switches
    assert width_bops(model, torch.zeros(1, 1, 10)) == {8: (conv + middle + linear) * 64,
                                                       4: (conv + linear) * 64 + middle * 16}  # fmt: skip
    with pytest.raises(ConfigError, match="nothing would switch width"):
        any_precision_(nn.Sequential(nn.Flatten(), nn.Linear(10, 3)), AnyPrecisionConfig(),
                       example_inputs=torch.randn(2, 1, 10))  # fmt: skip


def test_the_policys_bops_accounting_equals_a_hand_count(monkeypatch):
    choices = [8, 4, 2, 0]
    costs = torch.tensor([1.0, 0.25, 0.0625, 0.0])
    policy = PrecisionPolicy((1, 40), 4, hidden=4, view=5)
    assert policy.macs_per_frame() == 2 * 5 * 4 + 3 * (4 * 4 + 4 * 4) + 4 * 4  # encoder, GRU, head
    forced = torch.tensor([[0, 1, 3], [2, 2, 2]])  # clip 0: 8-bit, 4-bit, skip; clip 1: 2-bit x 3
    monkeypatch.setattr("effdl.adaptive.policy.policy_choices", lambda *a, **k: forced)
    probs = torch.softmax(torch.randn(3, 2, 3, 10), -1)
    result = evaluate_policy(policy, probs, torch.randn(2, 3, 1, 40), torch.tensor([1, 2]), costs=costs,
                             choices=choices, policy_bops=0.01)  # fmt: skip
    hand = (1 + 0.25 + 0 + 3 * 0.0625) / 6 + 0.01  # per frame, relative to the top width, plus the policy
    assert math.isclose(result.relative_bops, hand, rel_tol=1e-6)
    assert result.histogram == {8: pytest.approx(1 / 6), 4: pytest.approx(1 / 6), 2: pytest.approx(3 / 6),
                                0: pytest.approx(1 / 6)}  # fmt: skip


def test_a_bops_budget_is_met_by_dual_ascent():
    torch.manual_seed(0)
    clips, labels = torch.randn(96, 3, 1, 40), torch.randint(0, 4, (96,))
    right = torch.nn.functional.one_hot(labels, 4).float()[:, None].expand(96, 3, 4) * 0.9 + 0.025
    probs = torch.stack([right, torch.full((96, 3, 4), 0.25)])  # 8 bits always right, 4 bits always unsure
    costs = torch.tensor([1.0, 0.25])

    def spent(**kw):
        policy = PrecisionPolicy((1, 40), 2, hidden=4, view=5)
        config = PolicyConfig(skip=False, epochs=40, batch_size=32, lr=3e-2, tau_start=1.0, tau_end=0.3, **kw)
        return train_policy(policy, probs, clips, labels, costs=costs, config=config)

    assert spent(cost=0.0)[-1]["cost"] > 0.9  # free bits: every frame at 8 bits
    history = spent(cost=0.0, budget=0.5)
    assert 0.4 <= history[-1]["cost"] <= 0.6  # the multiplier (raised while over the budget) holds it there
    assert max(h["cost_weight"] for h in history) > 0


def test_difficulty_bands_spend_bits_on_the_hard_frames_within_the_budget():
    g = torch.Generator().manual_seed(0)
    n, t = 200, 4
    labels = torch.randint(0, 3, (n,), generator=g)
    difficulty = torch.rand(n, t, generator=g)
    # 8 bits right on every frame; 4 and 2 bits wrong (confidently) on frames harder than 0.5 and 0.25
    probs = torch.full((3, n, t, 3), 0.0)
    right = torch.nn.functional.one_hot(labels, 3).float()[:, None, :].expand(n, t, 3)
    wrong = torch.nn.functional.one_hot((labels + 1) % 3, 3).float()[:, None, :].expand(n, t, 3)
    for i, limit in enumerate((2.0, 0.5, 0.25)):
        probs[i] = torch.where((difficulty > limit)[..., None], wrong, right)
    costs = torch.tensor([1.0, 0.25, 1 / 16])
    data = (probs, labels, difficulty)
    r = difficulty_bands(data, data, costs=costs, choices=[8, 4, 2], budget=0.6)
    # 2 bits up to 0.25, 4 bits up to 0.5, 8 bits beyond: every frame right at about 0.55 of the BOPs
    assert r.accuracy == 1.0 and r.relative_bops <= 0.6
    assert r.histogram[8] == pytest.approx(float((difficulty > 0.5).float().mean()), abs=0.03)
    assert r.spearman["all_frames"] > 0.8  # harder frames, more bits
    cheap = difficulty_bands(data, data, costs=costs, choices=[8, 4, 2], budget=0.0)  # nothing fits: the cheapest
    assert cheap.histogram[2] == 1.0


def test_deployed_inference_equals_the_evaluation_on_precomputed_outputs():
    model = _converted().eval()
    policy = PrecisionPolicy((1, 40), 4, hidden=6)
    clips = torch.randn(5, 4, 1, 40)
    choices = [8, 4, 2, 0]
    pred, bits = adaptive_predict(model, policy, clips, choices=choices)
    choice = policy_choices(policy, clips, 3)
    expected = clip_predictions(frame_outputs(model, clips), torch.nn.functional.one_hot(choice, 4).float())
    torch.testing.assert_close(pred, expected)
    assert bits.shape == (5, 4) and bool((bits > 0).any(dim=1).all())  # every clip runs at least one frame


def test_any_precision_checkpoint_round_trips(tmp_path):
    model = _converted(end_bits=8).eval()
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    x = torch.randn(3, 1, 40)
    assert model_widths(loaded) == (8, 4, 2)
    for b in (8, 4, 2):
        with at_width(model, b), at_width(loaded, b):
            torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    policy = PrecisionPolicy((1, 40), 4, hidden=5, view=8)
    p2, choices = load_policy(save_policy(policy, tmp_path / "p.safetensors", choices=[8, 4, 2, 0]))
    assert choices == [8, 4, 2, 0]
    clips = torch.randn(2, 3, 1, 40)
    torch.testing.assert_close(p2(clips), policy.eval()(clips), atol=0, rtol=0)


def test_a_killed_training_resumes_exactly(tmp_path):
    data = load_mnist1d_video(clips=(40, 5, 5), frames=2)
    frames = data.train.frames()
    config = TrainConfig(epochs=2, batch_size=16, progress=False)
    full = _converted()
    Trainer(full, config, callbacks=[AnyPrecisionTraining()]).fit(frames)
    killed = _converted()
    with pytest.raises(Crash):  # after the first epoch (5 steps) and its checkpoint
        Trainer(killed, config, callbacks=[AnyPrecisionTraining(), CrashAt(7)], out_dir=tmp_path).fit(frames)
    resumed = _converted()
    Trainer(resumed, config, callbacks=[AnyPrecisionTraining()], out_dir=tmp_path).fit(frames, resume=True)
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=n)


def test_layers_it_cannot_switch_are_listed_with_their_reason():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(4, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.mid = nn.Linear(8, 8)
            self.out = nn.Linear(8, 3)

        def forward(self, x):
            h = self.inp(x)
            return self.out(self.mid(self.attn(h, h, h)[0])).mean(1)

    model = Attn()
    x = torch.randn(2, 5, 4)
    before = model(x)
    report = any_precision_(model, AnyPrecisionConfig(widths=(8, 4)), example_inputs=x)
    left = {d["layer"]: d["reason"] for d in report.details["left_out"]}
    assert "attn.out_proj" in left and "MultiheadAttention" in left["attn.out_proj"] and "attn" in left
    assert model(x).shape == before.shape and isinstance(model.mid, AnyPrecisionLayer)


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="widths must be integers in"):
        AnyPrecisionConfig(widths=(8, 1))
    with pytest.raises(ConfigError, match="runs at widths"):
        set_width_(_converted(), 3)
    with pytest.raises(ConfigError, match="two or more widths"):
        AdaptiveStudyConfig(anyprec=AnyPrecisionConfig(widths=(8,)))
    with pytest.raises(ConfigError, match="already an any-precision model"):
        any_precision_(_converted(), AnyPrecisionConfig(), example_inputs=torch.randn(2, 1, 40))
    with pytest.raises(ConfigError, match="tau_end must be in"):
        PolicyConfig(tau_start=1.0, tau_end=2.0)
    with pytest.raises(ConfigError, match="budget"):
        PolicyConfig(budget=1.5)
    with pytest.raises(ShapeError, match="same clips and frames"):
        train_policy(PrecisionPolicy((1, 40), 4), torch.rand(3, 2, 4, 10), torch.randn(2, 5, 1, 40),
                     torch.tensor([0, 1]), costs=torch.ones(4), config=PolicyConfig(epochs=1))  # fmt: skip


TINY = AdaptiveStudyConfig(frames=3, clips=(60, 40, 40), epochs=1, policy=PolicyConfig(epochs=3), sweep_costs=(1.0,))


def test_the_whole_pipeline_runs_and_reports(tmp_path):
    report = run_study(TINY, out_dir=tmp_path / "a")
    d = report.details
    assert {r["name"] for r in d["baselines"]} >= {"all 8-bit", "all 2-bit", "random policy (same histogram)",
                                                   "oracle (cheapest correct width)",
                                                   "difficulty bands (sees true difficulty)"}  # fmt: skip
    fixed = {r["name"]: r["relative_bops"] for r in d["baselines"]}
    assert fixed["all 8-bit"] == 1.0 and math.isclose(fixed["all 4-bit"], 0.25, rel_tol=1e-6)
    assert 0 <= d["policy"]["accuracy"] <= 1 and set(d["frame_accuracy"]["alone"]) == {"8", "4", "2"}
    assert [s["cost"] for s in d["sweep"]] == [1.0] and "cost weight" in (tmp_path / "a" / "report.md").read_text()
    for name in ("report.json", "report.md", "tradeoff.png", "model.safetensors", "policy.safetensors"):
        assert (tmp_path / "a" / name).is_file()
    again = run_study(TINY, out_dir=tmp_path / "a", resume=True)  # finished stages are read back
    assert again.details["policy"] == d["policy"]


def test_the_command_line_runs_the_stages_and_refuses_bad_input(tmp_path, capsys):
    argv = ["--frames", "3", "--seed", "1"]
    assert main(["adaptive", "train", "--out", str(tmp_path / "t"), "--epochs", "1", "--no-alone", "--no-progress",
                 *argv]) == 0  # fmt: skip
    model = str(tmp_path / "t" / "model.safetensors")
    assert main(["adaptive", "policy", "--model", model, "--out", str(tmp_path / "p"), "--policy-epochs", "2",
                 "--budget", "0.5", *argv]) == 0  # fmt: skip
    assert main(["adaptive", "eval", "--model", model, "--policy", str(tmp_path / "p" / "policy.safetensors"),
                 "--out", str(tmp_path / "e"), *argv]) == 0  # fmt: skip
    assert "adaptive policy" in capsys.readouterr().out
    assert main(["adaptive", "train", "--out", str(tmp_path / "x"), "--widths", "8,1", *argv]) == 2
    assert "widths must be integers in [2, 8]" in capsys.readouterr().err
    assert main(["adaptive", "eval", "--model", model, "--policy", model, "--out", str(tmp_path / "y"), *argv]) == 2
    assert "not a saved precision policy" in capsys.readouterr().err
    assert main(["adaptive", "policy", "--model", model, "--out", str(tmp_path / "z"), "--budget", "1.5", *argv]) == 2
    assert "budget must be in" in capsys.readouterr().err
