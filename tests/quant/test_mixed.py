import itertools

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from effdl.core.errors import ConfigError
from effdl.measure import hessian_trace
from effdl.quant import QuantConfig, allocate_bits, mixed_precision, quantize_, quantized_layers


def test_allocation_is_optimal_against_brute_force():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        layers = [f"l{i}" for i in range(4)]
        options = (2, 4, 8)
        scores = {n: {b: float(torch.rand(1, generator=g)) / b for b in options} for n in layers}
        weights = {n: int(torch.randint(10, 1000, (1,), generator=g)) for n in layers}
        budget = 2 + 6 * float(torch.rand(1, generator=g))
        total = sum(weights.values())
        best = min(
            (
                sum(scores[n][b] for n, b in zip(layers, combo, strict=True))
                for combo in itertools.product(options, repeat=4)
                if sum(weights[n] * b for n, b in zip(layers, combo, strict=True)) <= budget * total
            ),
        )
        got = allocate_bits(scores, weights, budget)
        assert sum(weights[n] * got[n] for n in layers) <= budget * total + 1e-9
        assert sum(scores[n][got[n]] for n in layers) <= best + 1e-9 + 0.01 * best


def test_budget_below_the_smallest_option_is_refused():
    with pytest.raises(ConfigError, match="below the smallest allocation"):
        allocate_bits({"a": {4: 0.0, 8: 0.0}}, {"a": 10}, budget=2.0)


def test_hutchinson_trace_matches_the_exact_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    params = dict(model.named_parameters())
    names = list(params)

    def loss_of(*flat):
        state = dict(zip(names, flat, strict=True))
        out = torch.func.functional_call(model, state, (x,))
        return nn.functional.cross_entropy(out, y)

    exact = torch.autograd.functional.hessian(loss_of, tuple(params.values()))
    est = hessian_trace(model, [(x, y)], params, samples=2000)
    traces = {n: float(torch.diagonal(exact[i][i].reshape(params[n].numel(), -1)).sum()) for i, n in enumerate(names)}
    for n in ("0.weight", "2.weight"):  # the blocks with most entries (least relative variance)
        assert abs(est[n] - traces[n]) <= 0.1 * abs(traces[n]), n
    assert abs(sum(est.values()) - sum(traces.values())) <= 0.1 * abs(sum(traces.values()))


@pytest.mark.parametrize("criterion", ["accuracy", "hessian"])
def test_mixed_precision_end_to_end(tmp_path, criterion):
    torch.manual_seed(0)
    x = torch.randn(512, 8)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    data = TensorDataset(x, y)
    r = mixed_precision(model.eval(), data, example_inputs=x[:1], budget=4.0, criterion=criterion)
    assert r.average_bits() <= 4.0
    assert set(r.bits.values()) <= {2, 4, 8}
    assert "bits" in r.to_table() and r.to_dict()["layers"][0]["layer"] == "0"
    assert r.plot(tmp_path / "mp.png").stat().st_size > 1000
    quantize_(model, r.to_config(QuantConfig(bits_a=None)), example_inputs=x[:4])
    assert {n: m.weight_quant.bits for n, m in quantized_layers(model).items()} == r.bits


def test_mixed_precision_bad_input():
    m = nn.Sequential(nn.Linear(4, 2))
    d = TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ConfigError, match="budget must be in"):
        mixed_precision(m, d, example_inputs=torch.zeros(1, 4), budget=1.0)
    with pytest.raises(ConfigError, match="criterion must be one of"):
        mixed_precision(m, d, example_inputs=torch.zeros(1, 4), criterion="fisher")
