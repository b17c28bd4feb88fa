import pytest
import torch

from effdl.core.errors import ConfigError
from effdl.unroll import build_solver, make_problem
from effdl.unroll.evaluate import (
    Comparison,
    Curve,
    classical_reach,
    compare_solvers,
    iterations_to_reach,
    nmse_curve,
    tuned_parameters,
)


@pytest.fixture(scope="module")
def problem():
    return make_problem(m=30, n=60)


def test_curve_and_reach_agree(problem):
    b, x = problem.sample(64, seed=0)
    ista = build_solver("ista", problem.A, lam=0.02)
    curve = nmse_curve(ista, b, x, 300)
    target = curve[99]
    first = next(k for k, v in enumerate(curve, start=1) if v <= target)
    assert iterations_to_reach(ista, b, x, target, 300) == first
    assert iterations_to_reach(ista, b, x, -500.0, 50) is None
    with pytest.raises(ConfigError, match="x must have shape"):
        nmse_curve(ista, b, x[:, :10])


def test_classical_reach_picks_the_fastest_weight(problem):
    b, x = problem.sample(128, seed=1_000_003)
    reaches, curves = classical_reach(problem, {"t": -12.0}, lams=(0.1, 0.01), max_iterations=3000, samples=128)
    by_algo = {r.algorithm: r for r in reaches}
    for algo in ("ista", "fista"):
        r = by_algo[algo]
        counts = [iterations_to_reach(build_solver(algo, problem.A, lam=lam), b, x, -12.0, 3000) for lam in (0.1, 0.01)]
        assert r.iterations == min(c for c in counts if c is not None)
        assert r.lam == (0.1, 0.01)[counts.index(r.iterations)]
    assert by_algo["fista"].iterations < by_algo["ista"].iterations
    assert len(curves) == 2


def test_comparison_table_and_counts(problem):
    solvers = {
        "ista": build_solver("ista", problem.A, 4),
        "alista": build_solver("alista", problem.A, 4),
        "lista-cp": build_solver("lista-cp", problem.A, 4),
        "hyperlista": build_solver("hyperlista", problem.A, 4),
    }
    c = compare_solvers(solvers, problem, samples=32, train_seconds={"alista": 1.5})
    assert [len(curve.nmse_db) for curve in c.curves] == [4] * 4
    assert [curve.params for curve in c.curves] == [0, 8, 4 * (30 * 60 + 1), 3]
    assert tuned_parameters(solvers["hyperlista"]) == 3
    table = c.to_table()
    assert "NMSE@4 (dB)" in table and "alista" in table and " 2 |" in table
    assert c.to_dict()["curves"][1]["train_seconds"] == 1.5
    with pytest.raises(ConfigError, match="no solver called"):
        c.curve("lista")


def test_compare_refuses_another_dictionary(problem):
    other = make_problem(m=30, n=60, seed=9)
    with pytest.raises(ConfigError, match="another dictionary"):
        compare_solvers({"ista": build_solver("ista", other.A)}, problem)


def test_linear_convergence_measure():
    c = Curve("x", [-1.0, -5.0, -9.0, -13.0], 0)
    assert c.mean_drop() == pytest.approx(4.0)
    assert Comparison(curves=[c], samples=1).curve("x") is c


def test_plots(problem, tmp_path):
    c = compare_solvers({"fista": build_solver("fista", problem.A, 3)}, problem, samples=16)
    assert c.plot(tmp_path / "nmse.png").stat().st_size > 1000
    assert torch.isfinite(torch.tensor(c.curves[0].nmse_db)).all()
