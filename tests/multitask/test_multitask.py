"""Multi-task learning: the scene dataset, task losses and metrics against direct computations, the network's
policies (executed blocks, MACs against a hand count, shared prefixes), AdaShare's policy losses and sampling, exact
resume, and bad input."""

import math
import statistics

import pytest
import torch
from torch import nn

from effdl.core.errors import ConfigError
from effdl.data import load_scenes, render_scenes
from effdl.measure import count_macs
from effdl.multitask import (
    ALLOCATIONS,
    MASK_KEY,
    AdaShareConfig,
    LabelledSubsets,
    MultiTaskConfig,
    MultiTaskLoss,
    MultiTaskNet,
    PilotEstimate,
    TaskSpec,
    adaptive_allocation,
    delta_mtl,
    evaluate_multitask,
    fixed_allocation,
    pilot_gains,
    scene_task_specs,
    sharing_loss,
    sparsity_loss,
    train_adashare,
    train_multitask,
)
from tests.helpers import Crash, CrashAt

SPECS = scene_task_specs()


def test_the_scene_dataset_is_identical_for_a_seed_and_its_targets_agree_with_each_other():
    a, b = render_scenes(64, size=20, seed=3), render_scenes(64, size=20, seed=3)
    assert torch.equal(a.images, b.images) and all(torch.equal(a.targets[t], b.targets[t]) for t in a.targets)
    assert not torch.equal(render_scenes(64, size=20, seed=4).images, a.images)
    t = a.targets
    assert a.images.shape == (64, 3, 20, 20) and 0 <= float(a.images.min()) and float(a.images.max()) <= 1
    torch.testing.assert_close(t["normal"].norm(dim=1), torch.ones(64, 20, 20))
    assert set(t["segment"].unique().tolist()) <= {0, 1, 2, 3} and set(t["count"].tolist()) <= {0, 1, 2, 3}
    # a boundary lies where the segmentation changes (a change of class is always a change of surface)
    seg = t["segment"]
    changes = seg[:, :, 1:] != seg[:, :, :-1]
    assert bool((t["edge"][:, :, 1:][changes] == 1).all()) and bool((t["edge"][:, :, :-1][changes] == 1).all())
    # objects are in front of the background plane (depth 0.9 +- 0.15 at most) and nowhere is the depth missing
    assert float(t["depth"][seg > 0].max()) < float(t["depth"][seg == 0].max()) and bool(t["depth"].isfinite().all())
    assert bool((t["count"] > 0).any())
    s = load_scenes(train=8, val=4, test=4, size=16, seed=1)
    assert not torch.equal(s.train.images[:4], s.test.images)  # the splits are different draws
    with pytest.raises(ConfigError, match="unknown scene tasks"):
        s.train.dataset(("segment", "albedo"))


def test_task_losses_and_metrics_match_direct_computations():
    g = torch.Generator().manual_seed(0)
    out, truth = torch.randn(2, 4, 3, 3, generator=g), torch.randint(0, 4, (2, 3, 3), generator=g)
    spec = TaskSpec("segment", 4)
    pred = out.argmax(dim=1)
    ious = [((pred == c) & (truth == c)).sum() / ((pred == c) | (truth == c)).sum()
            for c in range(4) if ((pred == c) | (truth == c)).any()]  # fmt: skip
    assert spec.metric(spec.metric_state(out, truth)) == pytest.approx(float(torch.stack(ious).mean()))
    normal = TaskSpec("normal", 3)
    a = torch.tensor([[[[1.0]], [[0.0]], [[0.0]]]])  # (1, 3, 1, 1): x
    b = torch.tensor([[[[0.0]], [[1.0]], [[0.0]]]])  # y: 90 degrees away
    assert normal.metric(normal.metric_state(a, b)) == pytest.approx(90.0)
    assert float(normal.loss(a, b)) == pytest.approx(1.0)
    depth = TaskSpec("regress", 1)
    assert depth.metric(depth.metric_state(torch.full((1, 1, 2, 2), 0.5), torch.zeros(1, 2, 2))) == 0.5
    label = TaskSpec("label", 3)
    masked = label.loss(torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([False, False]))
    assert float(masked) == 0.0  # no labelled example of this task in the batch
    with pytest.raises(ConfigError, match="unknown task kind"):
        TaskSpec("ranking", 1)
    specs = {"a": TaskSpec("label", 2), "b": TaskSpec("regress", 1)}
    assert delta_mtl({"a": 0.8, "b": 0.25}, {"a": 0.8, "b": 0.25}, specs) == 0.0


def _conv_macs(cin, cout, k, h, w):
    return cin * cout * k * k * h * w


def test_a_fixed_policy_executes_exactly_its_blocks_and_the_macs_match_a_hand_count():
    specs = {"seg": TaskSpec("segment", 4), "n": TaskSpec("label", 3)}
    net = MultiTaskNet(specs, widths=(8, 8, 16, 16), strides=(1, 1, 2, 1)).eval()
    net.set_policy([[1, 0, 1, 1], [1, 1, 0, 0]])  # seg skips block 1; n skips blocks 2 (the strided one) and 3
    ran = []
    for i, block in enumerate(net.blocks):
        block.body.register_forward_hook(lambda m, inp, out, i=i: ran.append(i))
    x = torch.rand(1, 3, 16, 16)
    net(x, ["seg"])
    assert ran == [0, 2, 3]
    ran.clear()
    net(x, ["n"])
    assert ran == [0, 1]
    stem = _conv_macs(3, 8, 3, 16, 16)
    body = [2 * _conv_macs(8, 8, 3, 16, 16), 2 * _conv_macs(8, 8, 3, 16, 16),
            _conv_macs(8, 16, 3, 8, 8) + _conv_macs(16, 16, 3, 8, 8), 2 * _conv_macs(16, 16, 3, 8, 8)]  # fmt: skip
    shortcut2 = _conv_macs(8, 16, 1, 8, 8)  # block 2's strided shortcut runs whether or not its body does
    seg_head = _conv_macs(16, 16, 3, 8, 8) + _conv_macs(16, 4, 1, 8, 8)
    n_head = 16 * 3

    class Only(nn.Module):
        def __init__(self, task):
            super().__init__()
            self.net, self.task = net, task

        def forward(self, x):
            return self.net(x, [self.task])[self.task]

    assert count_macs(Only("seg"), x) == stem + body[0] + body[2] + body[3] + shortcut2 + seg_head
    assert count_macs(Only("n"), x) == stem + body[0] + body[1] + shortcut2 + n_head
    # both tasks at once: their common prefix (stem, block 0) runs once
    assert count_macs(net, x) == stem + body[0] + body[1] + body[2] + body[3] + 2 * shortcut2 + seg_head + n_head
    net.set_policy(torch.ones(2, 4))  # hard sharing: one backbone pass for both tasks
    assert count_macs(net, x) == stem + sum(body) + shortcut2 + seg_head + n_head
    with pytest.raises(ConfigError, match="matrix of 0/1"):
        net.set_policy(torch.ones(3, 4))


def test_policy_losses_sharing_is_zero_for_identical_policies_and_sparsity_favours_skipping():
    same = torch.randn(1, 5, 2).expand(3, 5, 2).clone()
    assert float(sharing_loss(same)) == 0.0
    logits = torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(0), requires_grad=True)
    sharing_loss(logits).backward()
    step = logits - 0.1 * logits.grad
    assert float(sharing_loss(step.detach())) < float(sharing_loss(logits.detach()))  # the gradient pulls them together
    # the early blocks weigh most: the same disagreement costs more at block 0 than at block 4
    early, late = torch.zeros(2, 5, 2), torch.zeros(2, 5, 2)
    early[0, 0, 0], late[0, 4, 0] = 3.0, 3.0
    assert float(sharing_loss(early)) > float(sharing_loss(late)) > 0
    logits = torch.zeros(2, 4, 2, requires_grad=True)
    sparsity_loss(logits).backward()
    assert bool((logits.grad[..., 0] > 0).all()) and bool((logits.grad[..., 1] < 0).all())  # descent: toward skip
    assert float(sparsity_loss(torch.zeros(2, 4, 2), learn_from=3)) == pytest.approx(math.log(2))  # last block only


def test_sampling_with_decided_logits_gives_the_fixed_policy_output():
    torch.manual_seed(0)
    specs = {"seg": TaskSpec("segment", 4), "n": TaskSpec("label", 3)}
    net = MultiTaskNet(specs, widths=(8, 8, 8), strides=(1, 1, 1)).eval()
    policy = torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.float32)
    with torch.no_grad():
        net.policy_logits[..., 0] = 40 * (2 * policy - 1)  # certain choices
    x = torch.rand(2, 3, 12, 12)
    net.sampling = True
    sampled = net(x)
    net.sampling = False
    net.set_policy(policy)
    fixed = net(x)
    for k in specs:
        torch.testing.assert_close(sampled[k], fixed[k])


def test_hard_sharing_trains_and_beats_an_untrained_network():
    s = load_scenes(train=256, val=8, test=128, size=16)
    torch.manual_seed(0)
    before = evaluate_multitask(MultiTaskNet(SPECS, widths=(8,), strides=(2,)), s.test.dataset())
    torch.manual_seed(0)
    net = train_multitask(MultiTaskNet(SPECS, widths=(8,), strides=(2,)), s.train.dataset(),
                          MultiTaskConfig(epochs=5, batch_size=32, lr=5e-3))  # fmt: skip
    after = evaluate_multitask(net, s.test.dataset())
    assert after["segment"] > before["segment"] and after["depth"] < before["depth"]
    assert after["normal"] < before["normal"] and after["edge"] > before["edge"]


def test_a_killed_adashare_run_resumes_exactly_and_one_task_is_refused(tmp_path):
    s = load_scenes(train=32, val=4, test=4, size=16)
    cfg = AdaShareConfig(warmup_epochs=1, policy_epochs=2, retrain_epochs=1)
    train = MultiTaskConfig(batch_size=16, checkpoint_every=1)
    kwargs = {"widths": (8, 8, 8), "strides": (1, 2, 1)}
    full = train_adashare(SPECS, s.train.dataset(), cfg, train, **kwargs)
    with pytest.raises(Crash):  # killed in the policy stage (the warm-up has 2 steps, the policy stage 4)
        train_adashare(SPECS, s.train.dataset(), cfg, train, callbacks=[CrashAt(3)], out_dir=tmp_path, **kwargs)
    resumed = train_adashare(SPECS, s.train.dataset(), cfg, train, out_dir=tmp_path, resume=True, **kwargs)
    assert torch.equal(full.select_probabilities, resumed.select_probabilities)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    assert len(full.table()) == 5 and len(full.sharing_by_depth()) == 3
    with pytest.raises(ConfigError, match="at least two tasks"):
        train_adashare({"segment": SPECS["segment"]}, s.train.dataset(("segment",)), cfg, train, **kwargs)


def test_fixed_allocations_spend_the_budget_and_respect_the_pool():
    costs = {"segment": 5.0, "depth": 2.0, "count": 1.0}
    for strategy in ALLOCATIONS:
        counts = fixed_allocation(strategy, costs, 800, 1000)
        spent = sum(counts[t] * c for t, c in costs.items())
        assert 800 - sum(costs.values()) < spent <= 800, (strategy, counts)
    assert len(set(fixed_allocation("uniform-count", costs, 800, 1000).values())) == 1
    spend = {t: n * costs[t] for t, n in fixed_allocation("uniform-cost", costs, 900, 1000).items()}
    assert max(spend.values()) - min(spend.values()) <= 5.0  # equal spend up to rounding
    capped = fixed_allocation("uniform-cost", costs, 900, 100)  # count would want 300 labels: capped at the pool
    assert capped["count"] == 100 and capped["segment"] > 900 / 3 / 5  # what count could not spend went elsewhere
    with pytest.raises(ConfigError, match="unknown allocation strategy"):
        fixed_allocation("greedy", costs, 100, 10)
    with pytest.raises(ConfigError, match="costs must be positive"):
        fixed_allocation("uniform-count", {"a": 0.0}, 100, 10)


def test_labelled_subsets_mask_the_loss_and_the_adaptive_allocator_follows_the_pilot():
    pool = render_scenes(40, size=16).dataset()
    data = LabelledSubsets(pool, tuple(SPECS), {"segment": 5, "depth": 0, "normal": 40, "edge": 0, "count": 12})
    masks = torch.stack([data[i][1][MASK_KEY] for i in range(len(data))])
    assert len(data) == 40 and masks.sum(dim=0).tolist() == [5, 0, 40, 0, 12]
    bigger = LabelledSubsets(pool, tuple(SPECS), {"segment": 9, "normal": 40, "count": 12})
    assert bool((bigger.labelled[:, 0] | ~data.labelled[:, 0]).all())  # more labels of a task: a superset
    few = LabelledSubsets(pool, tuple(SPECS), {"segment": 5})
    everyone = LabelledSubsets(pool, tuple(SPECS), {"segment": 5}, keep_unlabelled=True)
    assert len(few) == 5 and len(everyone) == 40 and int(everyone.labelled.sum()) == 5
    # an unlabelled task contributes nothing: its loss and gradient are zero
    net = MultiTaskNet(SPECS, widths=(8,), strides=(1,))
    x, y = torch.utils.data.default_collate([data[i] for i in range(8)])
    y[MASK_KEY][:, 1:] = False
    MultiTaskLoss(SPECS)(net(x), y).backward()
    assert net.heads["depth"][-1].weight.grad.abs().sum() == 0 and net.heads["segment"][-1].weight.grad.abs().sum() > 0
    twenty = {t: 20 for t in SPECS}
    estimate = PilotEstimate(twenty, {t: 40 for t in SPECS}, {"segment": 6.0, "depth": 0.1, "normal": 1.0,
                                                               "edge": 1.0, "count": 3.0})  # fmt: skip
    costs = {"segment": 2.0, "depth": 1.0, "normal": 1.0, "edge": 1.0, "count": 1.0}
    counts = adaptive_allocation(estimate, costs, 2000, 2000)
    assert sum(counts[t] * c for t, c in costs.items()) <= 2000
    assert counts["segment"] > counts["normal"] > counts["depth"] and counts["count"] > counts["edge"]
    # labels proportional to slope / cost: the optimum of sum slope_t log n_t within the budget
    ratio = (counts["segment"] / counts["edge"]) / (6.0 / 2.0)
    assert ratio == pytest.approx(1.0, rel=0.02)
    assert counts["depth"] == 40  # held at what its pilot bought: the optimum would give it fewer
    with pytest.raises(ConfigError, match="already cost 240, more than the budget of 200"):
        adaptive_allocation(estimate, costs, 200, 2000)


def test_the_pilot_measures_gains_and_their_noise_and_shrinks_noise_to_uniform_cost():
    specs = {"a": TaskSpec("label", 2), "b": TaskSpec("label", 2), "c": TaskSpec("regress", 1)}
    costs = {"a": 4.0, "b": 1.0, "c": 2.0}
    calls = []

    def clean(counts):  # a's labels lift a and c (transfer); b's lift nothing; c's lower c's error
        calls.append(dict(counts))
        return {"a": 0.4 + counts["a"] / 1000, "b": 0.5, "c": 0.2 - counts["a"] / 4000 - counts["c"] / 2000}

    base = {"a": 50, "b": 100, "c": 40}
    est = pilot_gains(clean, specs, base)
    assert calls == [base, {**base, "a": 100}, {**base, "b": 200}, {**base, "c": 80}]
    by_hand = {"a": (50 / 450 + 12.5 / 167.5) * 100 / 3, "b": 0.0, "c": 20 / 167.5 * 100 / 3}
    assert est.gains == pytest.approx(by_hand)
    # the noise: only c's metric moves where c's own labels stay (a's labels transfer to it), by hand
    c_same = [0.1675, 0.155, 0.1675]  # the base run, a grown, b grown
    noise = math.sqrt(2) * 100 * statistics.stdev(c_same) / statistics.fmean(c_same) / 3
    assert est.noise == pytest.approx(dict.fromkeys(specs, noise))
    mean = statistics.fmean(by_hand.values())
    prior = statistics.pvariance(by_hand.values()) - noise**2
    weight = prior / (prior + noise**2)
    assert est.shrunk() == pytest.approx({t: mean + weight * (g - mean) for t, g in by_hand.items()})
    assert est.shrunk()["a"] > est.shrunk()["c"] > est.shrunk()["b"]  # pulled together, not reordered
    alloc = adaptive_allocation(est, costs, 2000, 1000)
    sh = est.shrunk()
    assert alloc["a"] / alloc["b"] == pytest.approx((sh["a"] / costs["a"]) / (sh["b"] / costs["b"]), rel=0.02)

    gen = torch.Generator().manual_seed(0)

    def noisy(counts):  # every task equally worth labelling, under training noise far above the signal
        jitter = torch.randn(3, generator=gen).tolist()
        return {"a": 0.5 + 0.05 * jitter[0] + 1e-5 * counts["a"], "b": 0.5 + 0.05 * jitter[1] + 1e-5 * counts["b"],
                "c": 0.2 + 0.02 * jitter[2] - 1e-6 * counts["c"]}  # fmt: skip

    est = pilot_gains(noisy, specs, base)
    assert max(est.gains.values()) - min(est.gains.values()) > 2.0  # the raw gains differ by noise alone
    assert len(set(est.shrunk().values())) == 1  # shrunk to their mean: nothing tells the tasks apart
    assert adaptive_allocation(est, costs, 2000, 1000) == fixed_allocation("uniform-cost", costs, 2000, 1000)
    with pytest.raises(ConfigError, match="at least 1 base label per task"):
        pilot_gains(clean, specs, {**base, "b": 0})
    with pytest.raises(ConfigError, match=r"\['b'\] scored exactly 0 in the pilot's base run"):
        pilot_gains(lambda counts: {**clean(counts), "b": 0.0}, specs, base)


def test_compare_allocations_scores_the_pilot_on_validation_data_only(monkeypatch):
    from effdl.multitask import study

    scored = []
    real = study.evaluate_multitask
    monkeypatch.setattr(study, "evaluate_multitask", lambda net, data: scored.append(data) or real(net, data))
    s = load_scenes(train=40, val=4, test=6, size=16)
    specs = {k: v for k, v in SPECS.items() if k in ("segment", "count")}
    val, test = s.val.dataset(tuple(specs)), s.test.dataset(tuple(specs))
    c = study.compare_allocations(s.train.dataset(tuple(specs)), val, test, specs, {"segment": 4.0, "count": 1.0}, 100,
                                  MultiTaskConfig(batch_size=8), steps=1, widths=(8,))  # fmt: skip
    assert [d is val for d in scored] == [False] + [True] * 3 + [False] * 4  # reference, 3 pilot runs, 4 strategies
    assert all(d is test for d in scored if d is not val)
    adaptive = c.rows["adaptive"]["counts"]
    assert all(adaptive[t] >= c.pilot["grown"][t] for t in specs) and c.rows["adaptive"]["spent"] <= 100
    with pytest.raises(ConfigError, match="pilot_share must be in"):
        study.compare_allocations(s.train.dataset(tuple(specs)), val, test, specs, {"segment": 4.0, "count": 1.0},
                                  100, pilot_share=0.8)  # fmt: skip


@pytest.mark.slow
def test_the_multitask_commands_compare_and_allocate_and_refuse_bad_costs(tmp_path, capsys):
    from tests.helpers import assert_refused, run_cli

    out = tmp_path / "cmp"
    small = ["--train", 48, "--test", 16, "--size", 16, "--no-progress", "-q"]
    code, text, err = run_cli(capsys, "multitask", "compare", *small, "--epochs", 1, "--warmup-epochs", 0,
                              "--policy-epochs", 1, "--out", out)  # fmt: skip
    assert code == 0, err
    assert "hard sharing" in text and "AdaShare" in text and "shared by" in text
    assert (out / "policy.png").stat().st_size > 0 and (out / "report.json").exists()
    first = (out / "report.json").read_text()
    code, _, err = run_cli(capsys, "multitask", "compare", *small, "--epochs", 1, "--warmup-epochs", 0,
                           "--policy-epochs", 1, "--out", out, "--resume")  # fmt: skip
    assert code == 0, err
    assert '"delta_mtl"' in first and first.split('"details"')[1] == (out / "report.json").read_text().split(
        '"details"')[1]  # a finished run resumed gives the same figures
    code, text, err = run_cli(capsys, "multitask", "budget", *small, "--steps", 2, "--out", tmp_path / "b")
    assert code == 0, err
    assert "adaptive" in text and "uniform-cost" in text and "adaptive pilot (validation scenes)" in text
    assert_refused(capsys, "multitask", "budget", "--costs", "segment=1", "--out", tmp_path / "c",
                   message="--costs must give a cost for each task")  # fmt: skip
    assert_refused(capsys, "multitask", "budget", "--costs", "segment=x", "--out", tmp_path / "c",
                   message="--costs takes TASK=COST pairs")  # fmt: skip
