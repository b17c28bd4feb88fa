import pytest
import torch

from effdl.core.errors import CheckpointError, ConfigError
from effdl.unroll import UnrollTrainConfig, build_solver, make_problem, nmse_db, train_solver
from effdl.unroll.train import STATE_FILE

CFG = UnrollTrainConfig(steps_per_stage=12, joint_steps_per_stage=20, eval_every=4, patience=0, batch_size=16,
                        val_size=64, checkpoint_every=5, progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def problem():
    return make_problem(m=20, n=40)


def _test_nmse(solver, problem):
    b, x = problem.sample(256, seed=99)
    with torch.no_grad():
        return nmse_db(solver(b), x)


@pytest.mark.parametrize("method", ["lista", "lista-cp", "lista-cpss", "alista"])
def test_layerwise_training_improves_every_method(problem, method):
    solver = build_solver(method, problem.A, 3)
    before = _test_nmse(solver, problem)
    result = train_solver(solver, problem, CFG.replace(lr=2e-3))
    assert [(s.depth, s.first) for s in result.stages] == [(1, 0), (1, 0), (1, 0), (2, 1), (2, 0), (2, 0),
                                                           (3, 2), (3, 0), (3, 0)]  # fmt: skip
    assert _test_nmse(solver, problem) < before - 0.5
    assert result.steps == sum(s.steps for s in result.stages) == 9 * 12


def test_joint_training_trains_all_layers_at_once(problem):
    solver = build_solver("alista", problem.A, 3)
    before = [p.detach().clone() for p in solver.parameters()]
    result = train_solver(solver, problem, CFG.replace(schedule="joint", lr=1e-2))
    assert [(s.depth, s.first) for s in result.stages] == [(3, 0)] * 3
    assert all(not torch.equal(a, b) for a, b in zip(before, solver.parameters(), strict=True))


def test_a_stage_keeps_its_best_parameters(problem):
    # a huge learning rate makes training diverge; the stage must give back its best (initial) parameters
    solver = build_solver("lista-cp", problem.A, 2)
    start = _test_nmse(solver, problem)
    train_solver(solver, problem, CFG.replace(lr=10.0, steps_per_stage=8))
    assert _test_nmse(solver, problem) <= start + 0.5


@pytest.mark.parametrize("warm", [True, False])
def test_warm_start_copies_the_previous_layer(problem, warm):
    solver = build_solver("alista", problem.A, 2)
    with torch.no_grad():
        solver.layers[0].gamma.fill_(0.7)
        solver.layers[0].theta.fill_(0.3)
    # no validation check inside the stages: every stage gives back the parameters it started from
    cfg = CFG.replace(steps_per_stage=4, stage_decays=(1.0,), eval_every=100, warm_start=warm)
    train_solver(solver, problem, cfg)
    layer2 = (solver.layers[1].gamma.item(), solver.layers[1].theta.item())
    assert layer2 == pytest.approx((0.7, 0.3) if warm else (1.0, 0.1))


def test_resume_is_bit_identical(problem, tmp_path, monkeypatch):
    ref = build_solver("lista-cpss", problem.A, 2)
    train_solver(ref, problem, CFG)

    solver = build_solver("lista-cpss", problem.A, 2)
    calls = {"n": 0}
    original = type(problem).sample

    def interrupted(self, count, *, seed):
        calls["n"] += 1
        if calls["n"] == 30:  # mid-stage, after a mid-stage checkpoint
            raise KeyboardInterrupt
        return original(self, count, seed=seed)

    monkeypatch.setattr(type(problem), "sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_solver(solver, problem, CFG, out_dir=tmp_path)
    monkeypatch.setattr(type(problem), "sample", original)
    assert (tmp_path / STATE_FILE).exists()

    resumed = build_solver("lista-cpss", problem.A, 2)  # a fresh process would start from scratch
    result = train_solver(resumed, problem, CFG, out_dir=tmp_path, resume=True)
    assert result.resumed
    for key, value in ref.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_resume_refuses_other_settings(problem, tmp_path):
    solver = build_solver("alista", problem.A, 2)
    train_solver(solver, problem, CFG.replace(steps_per_stage=2), out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="steps_per_stage differ"):
        train_solver(build_solver("alista", problem.A, 2), problem, CFG.replace(steps_per_stage=3),
                     out_dir=tmp_path, resume=True)  # fmt: skip
    with pytest.raises(CheckpointError, match="another problem"):
        train_solver(build_solver("lista-cp", problem.A, 2), problem, CFG.replace(steps_per_stage=2),
                     out_dir=tmp_path, resume=True)  # fmt: skip


def test_bad_training_input(problem):
    with pytest.raises(ConfigError, match="no trainable parameters"):
        train_solver(build_solver("hyperlista", problem.A, 2), problem, CFG)
    with pytest.raises(ConfigError, match="another dictionary"):
        train_solver(build_solver("alista", make_problem(m=20, n=40, seed=1).A, 2), problem, CFG)
    with pytest.raises(ConfigError, match="lr must be in"):
        UnrollTrainConfig(lr=0)
    with pytest.raises(ConfigError, match="stage_decays"):
        UnrollTrainConfig(stage_decays=())
