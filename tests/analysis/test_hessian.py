import pytest
import torch
from torch import nn
from torch.func import functional_call

from effdl.analysis import HessianOperator, epsilon_sharpness, hessian_spectrum, hessian_trace_total
from effdl.core.errors import ConfigError


def _tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    x = torch.randn(40, 3)
    y = torch.randint(0, 3, (40,))
    return net, [(x[:25], y[:25]), (x[25:], y[25:])], (x, y)


def _exact_hessian(net, x, y):
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])

    def loss(vec):
        params, offset = {}, 0
        for n, s in zip(names, shapes, strict=True):
            params[n] = vec[offset : offset + s.numel()].view(s)
            offset += s.numel()
        return nn.functional.cross_entropy(functional_call(net, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


def test_hessian_vector_products_match_the_exact_hessian():
    net, batches, (x, y) = _tiny()
    h = _exact_hessian(net, x, y)
    op = HessianOperator(net, batches)
    v = torch.randn(op.size)
    torch.testing.assert_close(op.matvec(v), h @ v, atol=1e-5, rtol=1e-4)  # batches weighted by their sizes


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_top_eigenvalue_within_one_percent_of_exact(method):
    net, batches, (x, y) = _tiny()
    exact = torch.linalg.eigvalsh(_exact_hessian(net, x, y).double())
    s = hessian_spectrum(net, batches, top_k=2, method=method, iterations=200 if method == "power" else 40)
    assert s.top[0] == pytest.approx(float(exact[-1]), rel=0.01)
    assert s.top[1] == pytest.approx(float(exact[-2]), rel=0.01)
    assert s.min == pytest.approx(float(exact[0]), rel=0.05, abs=1e-3)
    assert s.ratio == pytest.approx(abs(float(exact[0] / exact[-1])), rel=0.05, abs=1e-3)


def test_trace_within_ten_percent_of_exact():
    net, _batches, (x, y) = _tiny()
    exact = float(torch.trace(_exact_hessian(net, x, y)))
    assert hessian_trace_total(net, [(x, y)], samples=400) == pytest.approx(exact, rel=0.1)


def test_hessian_is_deterministic_and_leaves_the_model_alone():
    net, batches, _ = _tiny()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    a = hessian_spectrum(net, batches, top_k=1, iterations=8, seed=3)
    b = hessian_spectrum(net, batches, top_k=1, iterations=8, seed=3)
    assert a.top == b.top and a.min == b.min
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_hessian_errors():
    net, batches, _ = _tiny()
    with pytest.raises(ConfigError, match="method"):
        hessian_spectrum(net, batches, method="arnoldi")
    with pytest.raises(ConfigError, match="exceeds"):
        hessian_spectrum(net, batches, top_k=1000)
    with pytest.raises(ConfigError, match="at least one"):
        HessianOperator(net, [])
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        HessianOperator(frozen, batches)


def test_epsilon_sharpness_is_larger_for_a_sharper_quadratic_and_restores_weights():
    def sharpness(scale):
        lin = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            lin.weight.fill_(0.5)
        x = scale * torch.eye(2)
        before = lin.weight.detach().clone()
        value = epsilon_sharpness(lin, [(x, torch.zeros(2, 1))], epsilon=0.05, loss_fn=nn.MSELoss())
        assert torch.equal(lin.weight, before) and lin.weight.grad is None
        return value

    assert sharpness(3.0) > sharpness(1.0) > 0
    with pytest.raises(ConfigError, match="epsilon"):
        epsilon_sharpness(nn.Linear(2, 1), [], epsilon=0)


def test_trace_weights_batches_by_example_count_like_the_operator():
    # MSE of a linear map: the Hessian of the mean loss over all 4 examples is 2 X^T X / 4 = diag(1.5, 2)
    lin = nn.Linear(2, 1, bias=False)
    batches = [(torch.tensor([[1.0, 0.0]] * 3), torch.zeros(3, 1)), (torch.tensor([[0.0, 2.0]]), torch.zeros(1, 1))]
    assert hessian_trace_total(lin, batches, loss_fn=nn.MSELoss()) == pytest.approx(3.5)  # equal weights: 5.0
    op = HessianOperator(lin, batches, loss_fn=nn.MSELoss())
    assert float(op.matvec(torch.ones(2)).sum()) == pytest.approx(3.5)
