import itertools

import numpy as np
import pytest
import torch

from effdl.core.errors import ConfigError, ShapeError
from effdl.unroll import FISTA, ISTA, build_solver, make_problem, nmse_db
from effdl.unroll.solvers import lipschitz


def _lasso_objective(A, b, x, lam):
    return 0.5 * (x @ A.T - b).pow(2).sum(1) + lam * x.abs().sum(1)


@pytest.mark.parametrize("algorithm", [ISTA, FISTA])
def test_ista_and_fista_converge_to_sklearns_lasso(algorithm):
    from sklearn.linear_model import Lasso

    p = make_problem(m=40, n=80, sparsity=0.15, seed=5)
    b, _ = p.sample(3, seed=1)
    lam = 0.05
    x = algorithm(p.A.double(), lam=lam)(b.double(), 20000)
    for i in range(3):
        # sklearn minimizes ||y - X w||^2 / (2 m) + alpha ||w||_1, the LASSO divided by m: alpha = lam / m
        ref = Lasso(alpha=lam / p.m, fit_intercept=False, tol=1e-12, max_iter=200000)
        ref.fit(p.A.double().numpy(), b[i].double().numpy())
        assert np.abs(x[i].numpy() - ref.coef_).max() < 1e-5
        assert (np.abs(ref.coef_) > 0).sum() > 5  # a non-trivial solution
        theirs = _lasso_objective(p.A.double(), b[i : i + 1].double(), torch.from_numpy(ref.coef_)[None], lam)
        ours = _lasso_objective(p.A.double(), b[i : i + 1].double(), x[i : i + 1], lam)
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)


def test_ista_decreases_the_lasso_objective_every_step():
    p = make_problem(m=30, n=60)
    b, _ = p.sample(4, seed=0)
    values = [_lasso_objective(p.A, b, x, 0.1) for x in ISTA(p.A, lam=0.1).steps(b, 50)]
    for before, after in itertools.pairwise(values):
        assert torch.all(after <= before + 1e-5)


def test_fista_is_faster_than_ista_and_both_run_any_depth():
    p = make_problem(m=50, n=100)
    b, x = p.sample(64, seed=0)
    assert nmse_db(FISTA(p.A, lam=0.01)(b, 100), x) < nmse_db(ISTA(p.A, lam=0.01)(b, 100), x) - 3
    assert len(ISTA(p.A, 4).iterates(b, 30)) == 30


def test_lipschitz_is_the_squared_spectral_norm():
    A = torch.randn(10, 20)
    assert lipschitz(A) == pytest.approx(torch.linalg.eigvalsh(A.T.double() @ A.double()).max().item(), rel=1e-6)


def test_bad_input():
    p = make_problem(m=10, n=20)
    ista = ISTA(p.A)
    with pytest.raises(ShapeError, match=r"\(batch, 10\)"):
        ista(torch.zeros(2, 11))
    with pytest.raises(ConfigError, match="lam must be in"):
        ISTA(p.A, lam=0.0)
    with pytest.raises(ConfigError, match="layers must be a positive integer"):
        ISTA(p.A, 0)
    with pytest.raises(ConfigError, match=r"depth must be in 0\.\.4"):
        build_solver("alista", p.A, 4)(torch.zeros(1, 10), 5)
    with pytest.raises(LookupError, match=r"valid sparse solvers: .*alista"):
        build_solver("lista-ss", p.A)
    assert ista(torch.zeros(2, 10), 0).shape == (2, 20)
