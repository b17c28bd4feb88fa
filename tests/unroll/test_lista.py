import pytest
import torch

from effdl.unroll import ISTA, LISTA, LISTACP, LISTACPSS, build_solver, make_problem, nmse_db


@pytest.fixture(scope="module")
def problem():
    return make_problem(m=20, n=40)


@pytest.mark.parametrize("cls", [LISTA, LISTACP])
def test_untrained_lista_is_ista(problem, cls):
    b, _ = problem.sample(8, seed=0)
    net = cls(problem.A, 6, lam=0.1)
    ista = ISTA(problem.A, lam=0.1)
    with torch.no_grad():
        for ours, ref in zip(net.iterates(b), ista.iterates(b, 6), strict=True):
            assert torch.allclose(ours, ref, atol=1e-5)


def test_support_selection_off_is_lista_cp(problem):
    b, _ = problem.sample(8, seed=0)
    cpss = LISTACPSS(problem.A, 4, per_layer=0.0, maximum=0.0)
    cp = LISTACP(problem.A, 4)
    cp.load_state_dict(cpss.state_dict())
    assert torch.equal(cp(b), cpss(b))
    assert cpss.fractions == [0.0] * 4


def test_parameter_counts(problem):
    m, n, K = 20, 40, 5
    assert sum(p.numel() for p in LISTA(problem.A, K).parameters()) == K * (n * m + n * n + 1)
    assert sum(p.numel() for p in LISTACP(problem.A, K).parameters()) == K * (n * m + 1)
    assert len(LISTA(problem.A, K).layer_parameters(2)) == 3


def test_layers_are_untied_and_trainable(problem):
    b, x = problem.sample(32, seed=0)
    net = build_solver("lista-cpss", problem.A, 3)
    loss = (net(b) - x).pow(2).sum()
    loss.backward()
    grads = [layer.W.grad.norm().item() for layer in net.layers]
    assert all(g > 0 for g in grads)
    before = nmse_db(net(b).detach(), x)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(30):
        opt.zero_grad()
        (net(b) - x).pow(2).sum().backward()
        opt.step()
    assert nmse_db(net(b).detach(), x) < before - 1
