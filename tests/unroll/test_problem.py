import math

import pytest
import torch

from effdl.core.errors import ConfigError, ShapeError
from effdl.unroll.problem import Problem, SparseProblem, check_dictionary, gaussian_dictionary, make_problem, nmse_db


def test_default_is_the_standard_setting():
    p = make_problem()
    assert p.A.shape == (250, 500)
    assert torch.allclose(p.A.norm(dim=0), torch.ones(500), atol=1e-5)
    b, x = p.sample(2000, seed=0)
    assert abs((x != 0).float().mean().item() - 0.1) < 0.005
    nonzero = x[x != 0]
    assert abs(nonzero.std().item() - 1.0) < 0.03 and abs(nonzero.mean().item()) < 0.03
    assert torch.allclose(b, x @ p.A.T, atol=1e-5)


def test_samples_depend_on_the_seed_only():
    p = make_problem(m=10, n=20)
    assert torch.equal(p.sample(5, seed=3)[1], p.sample(5, seed=3)[1])
    assert not torch.equal(p.sample(5, seed=3)[1], p.sample(5, seed=4)[1])
    assert torch.equal(make_problem(m=10, n=20).A, p.A) and not torch.equal(make_problem(m=10, n=20, seed=1).A, p.A)


@pytest.mark.parametrize("snr", [40.0, 10.0])
def test_noise_has_the_requested_snr(snr):
    p = make_problem(m=100, n=200, snr_db=snr)
    b, x = p.sample(500, seed=0)
    clean = x @ p.A.T
    measured = 10 * math.log10(clean.pow(2).sum().item() / (b - clean).pow(2).sum().item())
    assert abs(measured - snr) < 0.2


def test_ill_conditioned_dictionary():
    A = gaussian_dictionary(100, 200, condition=30.0)
    assert torch.allclose(A.norm(dim=0), torch.ones(200), atol=1e-5)
    cond = torch.linalg.cond(A.double()).item()
    assert 15 < cond < 60  # normalizing the columns moves it a little
    assert torch.linalg.cond(gaussian_dictionary(100, 200).double()).item() < 10


@pytest.mark.parametrize("magnitude", ["uniform", "sign"])
def test_magnitudes(magnitude):
    _, x = make_problem(m=10, n=40, magnitude=magnitude).sample(200, seed=0)
    values = x[x != 0].abs()
    if magnitude == "sign":
        assert torch.all(values == 1)
    else:
        assert values.min() >= 1 and values.max() <= 2


@pytest.mark.parametrize("sparsity", [0.0, 1.0, -0.1, 1.5])
def test_sparsity_outside_the_open_interval_is_refused(sparsity):
    with pytest.raises(ConfigError, match=r"sparsity must be in \(0.0, 1.0\).*fraction of non-zero"):
        SparseProblem(sparsity=sparsity)


def test_bad_problem_settings():
    with pytest.raises(ConfigError, match="n must be >= m"):
        SparseProblem(m=50, n=20)
    with pytest.raises(ConfigError, match="condition must be in"):
        SparseProblem(condition=0.5)
    with pytest.raises(ConfigError, match="magnitude must be one of"):
        SparseProblem(magnitude="laplace")


def test_dictionary_with_zero_columns_is_refused():
    A = torch.randn(10, 20)
    A[:, 7] = 0
    with pytest.raises(ShapeError, match=r"1 zero column\(s\) \(first: 7\)"):
        check_dictionary(A)
    with pytest.raises(ShapeError, match="zero column"):
        Problem(SparseProblem(m=10, n=20), A=A)
    with pytest.raises(ShapeError, match="2-D"):
        check_dictionary(torch.randn(3, 4, 5))
    bad = torch.randn(4, 5)
    bad[0, 0] = float("nan")
    with pytest.raises(ShapeError, match="NaN"):
        check_dictionary(bad)


def test_explicit_dictionary_sets_the_shape():
    A = torch.randn(8, 16)
    p = Problem(A=A)
    assert (p.m, p.n) == (8, 16) and p.sample(3, seed=0)[0].shape == (3, 8)


def test_mismatched_shapes_are_refused():
    p = make_problem(m=10, n=20)
    with pytest.raises(ShapeError, match=r"shape \(batch, 10\), got \(3, 7\)"):
        p.check_measurements(torch.zeros(3, 7))
    assert p.check_measurements(torch.zeros(10)).shape == (1, 10)
    with pytest.raises(ShapeError, match="shapes differ"):
        nmse_db(torch.zeros(2, 3), torch.ones(2, 4))
    with pytest.raises(ConfigError, match="all-zero"):
        nmse_db(torch.zeros(2, 3), torch.zeros(2, 3))


def test_nmse_is_the_ratio_of_sums():
    x = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    est = torch.tensor([[0.0, 0.0], [0.0, 3.0]])
    assert nmse_db(est, x) == pytest.approx(10 * math.log10(1 / 10))
