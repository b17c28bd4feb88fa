import pytest
import torch

from effdl.core.errors import ConfigError, ShapeError
from effdl.unroll.shrink import soft_threshold, support_schedule, support_select


def test_soft_threshold_is_the_l1_prox():
    v = torch.linspace(-3, 3, 61, dtype=torch.float64)
    theta = 0.7
    # prox of theta |x|: argmin_x (x - v)^2 / 2 + theta |x|, by brute force on a fine grid
    grid = torch.linspace(-4, 4, 80001, dtype=torch.float64)
    brute = grid[((grid[None, :] - v[:, None]) ** 2 / 2 + theta * grid.abs()[None, :]).argmin(dim=1)]
    assert torch.allclose(soft_threshold(v, theta), brute, atol=2e-4)


def test_support_select_keeps_the_largest_entries():
    torch.manual_seed(0)
    v = torch.randn(6, 50)
    theta, fraction = 0.3, 0.1  # 5 entries per row
    out = support_select(v, theta, fraction)
    top = v.abs().topk(5, dim=1).indices
    kept = torch.zeros_like(v, dtype=torch.bool).scatter_(1, top, True)
    assert torch.equal(out[kept], v[kept])
    assert torch.allclose(out[~kept], soft_threshold(v, theta)[~kept])


def test_support_select_never_keeps_entries_below_the_threshold():
    v = torch.tensor([[0.2, 0.1, -0.05, 2.0]])
    assert support_select(v, 0.5, 1.0).tolist() == [[0.0, 0.0, 0.0, 2.0]]


def test_per_row_fractions_match_the_scalar_case():
    torch.manual_seed(1)
    v = torch.randn(4, 40)
    rows = torch.tensor([0.0, 0.1, 0.25, 0.5])
    out = support_select(v, 0.2, rows)
    for i, f in enumerate(rows.tolist()):
        assert torch.equal(out[i : i + 1], support_select(v[i : i + 1], 0.2, f))


def test_support_select_differentiates_values_and_threshold():
    v = torch.tensor([[3.0, -2.0, 0.5, 1.5]], requires_grad=True)
    theta = torch.tensor(1.0, requires_grad=True)
    support_select(v, theta, 0.5).sum().backward()
    assert v.grad.tolist() == [[1.0, 1.0, 0.0, 1.0]]
    assert theta.grad.item() == -1.0  # only the shrunk entry 1.5 -> 0.5 depends on theta


def test_schedule_and_errors():
    assert support_schedule(16)[0] == pytest.approx(0.012)
    assert support_schedule(16)[-1] == pytest.approx(0.13)
    with pytest.raises(ConfigError, match="per_layer"):
        support_schedule(4, per_layer=1.5)
    with pytest.raises(ShapeError, match=r"\(batch, n\)"):
        support_select(torch.zeros(3), 0.1, 0.1)
