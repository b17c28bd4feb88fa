import pytest
import torch

from effdl.core.errors import ConfigError
from effdl.unroll import build_solver, make_problem, nmse_db
from effdl.unroll.hyper import HyperTuneConfig, tune_hyperlista


@pytest.fixture(scope="module")
def problem():
    return make_problem(m=50, n=100)


@pytest.mark.parametrize("method", ["grid", "bayes"])
def test_tuning_beats_the_defaults_and_fista(problem, method):
    b, x = problem.sample(256, seed=5)
    solver = build_solver("hyperlista", problem.A, 12)
    with torch.no_grad():
        default = nmse_db(solver(b), x)
        fista = nmse_db(build_solver("fista", problem.A, 12, lam=0.05)(b), x)
    cfg = HyperTuneConfig(method=method, samples=128, points=4, rounds=2, evaluations=30, initial=8, progress=False)
    result = tune_hyperlista(solver, problem, cfg)
    assert len(result.trials) == (4**3 * 2 if method == "grid" else 30)
    assert result.nmse_db == min(t["nmse_db"] for t in result.trials)
    assert solver.hyperparameters() == result.best
    for name, (low, high) in zip(("c1", "c2", "c3"), cfg.bounds, strict=True):
        assert low * 0.5 <= result.best[name] <= high * 2
    with torch.no_grad():
        tuned = nmse_db(solver(b), x)
    assert tuned < min(default, fista) - 3


def test_tuning_is_deterministic(problem):
    cfg = HyperTuneConfig(method="bayes", samples=64, evaluations=14, initial=6, progress=False)
    a = tune_hyperlista(build_solver("hyperlista", problem.A, 6), problem, cfg)
    b = tune_hyperlista(build_solver("hyperlista", problem.A, 6), problem, cfg)
    assert a.best == b.best


def test_bad_tuning_input(problem):
    with pytest.raises(ConfigError, match="tunes a HyperLISTA"):
        tune_hyperlista(build_solver("alista", problem.A, 2), problem, HyperTuneConfig(progress=False))
    with pytest.raises(ConfigError, match="bounds of c2 must satisfy"):
        HyperTuneConfig(bounds=((0.1, 1.0), (0.0, 1.0), (0.1, 1.0)))
    with pytest.raises(ConfigError, match="method must be one of"):
        HyperTuneConfig(method="random")
