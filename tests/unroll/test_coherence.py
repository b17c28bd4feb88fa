import pytest
import torch

from effdl.core.errors import ShapeError
from effdl.unroll.coherence import analytic_weight, mutual_coherence
from effdl.unroll.problem import gaussian_dictionary


def _frobenius(W, A):
    cross = (W / (W * A).sum(0)).T.double() @ A.double()
    return (cross.pow(2).sum() - cross.diagonal().pow(2).sum()).item()


@pytest.mark.parametrize(("m", "n", "condition"), [(250, 500, None), (50, 120, None), (60, 100, 30.0)])
def test_analytic_weight_has_lower_coherence_than_the_dictionary(m, n, condition):
    A = gaussian_dictionary(m, n, seed=3, condition=condition)
    W = analytic_weight(A)
    assert torch.allclose((W * A).sum(0), torch.ones(n), atol=1e-4)
    assert mutual_coherence(A, W) < mutual_coherence(A)


def test_analytic_weight_matches_the_papers_projected_gradient_descent():
    # an independent solver of min ||W^T A||_F^2 (off-diagonal) s.t. diag(W^T A) = 1: ALISTA's Algorithm 1
    A = gaussian_dictionary(20, 40, seed=0).double()
    W = A.clone()
    for _ in range(20000):
        W = W - 0.05 * A @ (A.T @ W - torch.eye(40))
        W = W + (1 - (W * A).sum(0)) * A  # projection onto w_i^T a_i = 1 (a_i has unit norm)
    closed = analytic_weight(A.float()).double()
    assert _frobenius(closed, A) <= _frobenius(W, A) + 1e-6
    assert torch.allclose(closed, W, atol=1e-3)


def test_analytic_weight_is_optimal_against_feasible_perturbations():
    A = gaussian_dictionary(15, 30, seed=2)
    W = analytic_weight(A).double()
    best = _frobenius(W, A)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        d = torch.randn(W.shape, generator=gen, dtype=torch.float64) * 1e-2
        d = d - (d * A.double()).sum(0) * A.double()  # keep w_i^T a_i = 1
        assert _frobenius(W + d, A) > best


def test_coherence_values_and_errors():
    assert mutual_coherence(torch.eye(4)) == 0.0
    A = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert mutual_coherence(A) == pytest.approx(2**-0.5)
    with pytest.raises(ShapeError, match="shape of A"):
        mutual_coherence(A, torch.ones(3, 2))
    with pytest.raises(ShapeError, match="singular"):
        analytic_weight(torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]))
    assert analytic_weight(torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]), ridge=1e-6).shape == (2, 3)
