import pytest
import torch

from effdl.core.errors import ConfigError, ShapeError
from effdl.unroll import ALISTA, ISTA, HyperLISTA, analytic_weight, make_problem, mutual_coherence
from effdl.unroll.solvers import lipschitz


@pytest.fixture(scope="module")
def problem():
    return make_problem(m=40, n=80)


def test_alista_with_ista_settings_is_ista(problem):
    L = lipschitz(problem.A)
    net = ALISTA(problem.A, 5, W=problem.A, gamma=1 / L, theta=0.1 / L, support=False)
    b, _ = problem.sample(8, seed=0)
    with torch.no_grad():
        assert torch.allclose(net(b), ISTA(problem.A, lam=0.1)(b, 5), atol=1e-5)


def test_alista_uses_the_analytic_weight_and_learns_two_numbers_per_layer(problem):
    net = ALISTA(problem.A, 7)
    assert torch.allclose(net.W, analytic_weight(problem.A))
    assert [p.numel() for p in net.parameters()] == [1] * 14
    with pytest.raises(ShapeError, match="shape of A"):
        ALISTA(problem.A, 2, W=torch.ones(3, 3))


def test_hyperlista_formulas(problem):
    net = HyperLISTA(problem.A, 3, c1=0.5, c2=0.1, c3=1.0)
    assert net.mu == pytest.approx(mutual_coherence(problem.A, net.W))
    assert torch.allclose(net.A_pinv @ problem.A @ net.A_pinv, net.A_pinv, atol=1e-4)
    b, _ = problem.sample(4, seed=0)
    # the first layer starts at x = 0: residual -b, threshold c1 mu ||A^+ b||_1, no momentum, no support selection
    theta = 0.5 * net.mu * (b @ net.A_pinv.T).abs().sum(1, keepdim=True)
    v = b @ net.W
    expected = torch.sign(v) * torch.relu(v.abs() - theta)
    assert torch.allclose(net.iterates(b, 1)[0], expected, atol=1e-5)


def test_hyperlista_second_layer_by_hand(problem):
    net = HyperLISTA(problem.A, 2, c1=0.2, c2=0.05, c3=2.0)
    b, _ = problem.sample(4, seed=1)
    x1, x2 = net.iterates(b)
    r = x1 @ problem.A.T - b
    err = (r @ net.A_pinv.T).abs().sum(1, keepdim=True)
    theta = 0.2 * net.mu * err
    beta = 0.05 * net.mu * (x1 != 0).sum(1, keepdim=True)
    fraction = (2.0 * torch.log((b @ net.A_pinv.T).abs().sum(1, keepdim=True) / err)).clamp(0, 1)
    v = x1 - r @ net.W + beta * x1  # x^0 = 0
    for i in range(4):
        keep = int(fraction[i].item() * problem.n)
        order = v[i].abs().argsort(descending=True)[:keep]
        expected = torch.sign(v[i]) * torch.relu(v[i].abs() - theta[i])
        kept = order[v[i, order].abs() > theta[i]]
        expected[kept] = v[i, kept]
        assert torch.allclose(x2[i], expected, atol=1e-5)
    assert fraction.max() > 0  # support selection was active


def test_hyperlista_has_no_trainable_parameters_and_any_depth(problem):
    b, _ = problem.sample(4, seed=0)
    net = HyperLISTA(problem.A, 12, c1=0.1, c2=0.02, c3=0.5)
    assert list(net.parameters()) == []
    assert len(net.iterates(b, 20)) == 20
    with pytest.raises(ConfigError, match="c2 must be in"):
        HyperLISTA(problem.A, 3, c2=-1.0)
