"""Federated training with quantized clients: the k-bit client layer against a float reference, the wire formats,
the simulator's rounds, failures and resume."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from effdl.core.errors import CheckpointError, ConfigError
from effdl.federated import (
    FederatedConfig,
    QuantizedWeight,
    client_state_bytes,
    decode,
    encode,
    payload_bytes,
    quantize_weight,
    run_federated,
    split_clients,
    to_quantized_client,
)
from effdl.federated import server as server_module
from effdl.federated.quantized import _pack, _unpack


def toy_data(n=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 16, generator=g)
    y = (x[:, 0, :8].sum(1) > x[:, 0, 8:].sum(1)).long() + 2 * (x[:, 0, 0] > 0).long()
    return SimpleNamespace(train=TensorDataset(x, y), test=TensorDataset(x[:80], y[:80]))


def toy_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128, 4))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_packed_codes_round_trip_and_take_k_bits(bits):
    qmax = 2 ** (bits - 1) - 1
    codes = torch.randint(-qmax, qmax + 1, (7, 13), dtype=torch.int8)
    packed = _pack(codes, bits)
    assert torch.equal(_unpack(packed, bits, codes.numel()).reshape(7, 13), codes)
    assert packed.numel() == -(-codes.numel() * bits // 8)
    q = QuantizedWeight(packed, torch.ones(7), (7, 13), bits)
    assert q.nbytes == packed.numel() + 7 * 4


@pytest.mark.parametrize("layer", [nn.Linear(300, 40), nn.Conv1d(6, 40, 3, padding=1), nn.Conv2d(4, 4, 3, groups=4)])
def test_quantized_layer_computes_and_steps_like_sgd_on_its_grid(layer):
    torch.manual_seed(0)
    shape = {nn.Linear: (5, 300), nn.Conv1d: (5, 6, 9), nn.Conv2d: (5, 4, 6, 6)}[type(layer)]
    x = torch.randn(*shape, requires_grad=True)
    client = to_quantized_client(nn.Sequential(layer), 8)
    q = client[0].q
    w0 = q.dequantize()
    ref = layer
    with torch.no_grad():
        ref.weight.copy_(w0)  # the float layer with the dequantized weights
    client.train()
    client[0].rounding.lr, client[0].rounding.stochastic = 0.1, False
    out = client(x)
    out_ref = ref(x)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, g)
    gx_ref, gw_ref = torch.autograd.grad(out_ref, (x, ref.weight), g)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-5)
    want, _ = quantize_weight(w0 - 0.1 * gw_ref, 8, scale=q.scale)  # round to nearest on the server's grid
    assert (q.codes().int() - want.int()).abs().max() <= 1  # float summation order may flip a tie
    assert float((q.codes() != want).float().mean()) < 0.01


def test_stochastic_rounding_is_unbiased_and_nearest_rounding_stalls():
    w = torch.full((4, 64), 0.5)
    grad = torch.full((4, 64), 0.02)  # lr * grad is a tenth of a step
    q = QuantizedWeight.from_float(w, 4)
    step = float(q.scale[0])
    nearest = QuantizedWeight.from_float(w, 4)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        q.step_(grad, step * 5, stochastic=True, generator=g)  # each step moves 0.1 of a grid step on average
        nearest.step_(grad, step * 5, stochastic=False)
    moved = float((w - q.dequantize()).mean()) / step
    assert 1.5 < moved < 2.5  # 20 x 0.1 steps, unbiased
    assert torch.equal(nearest.dequantize(), QuantizedWeight.from_float(w, 4).dequantize())  # never moved


def test_client_holds_no_float_weights_and_less_state():
    model = toy_model()
    client = to_quantized_client(model, 4)
    assert [n for n, _ in client.named_parameters()] == ["0.bias", "3.bias"]
    float_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert client_state_bytes(client) < 0.2 * float_bytes


def test_wire_formats_shrink_close_to_32_over_k():
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    floats = payload_bytes(encode(model, FederatedConfig(method="fedavg")))
    for bits in (8, 4, 2):
        config = FederatedConfig(method="fedaqt", bits=bits)
        payload = encode(model, config)
        assert floats / payload_bytes(payload) > 0.85 * 32 / bits  # scales and float biases take the rest
        state = decode(payload, model, config)
        step = model[0].weight.abs().amax(dim=1, keepdim=True) / (2 ** (bits - 1) - 1)
        assert bool(((state["0.weight"] - model[0].weight).abs() <= step / 2 + 1e-6).all())


def test_dirichlet_split_covers_every_example_once():
    labels = np.repeat(np.arange(10), 30)
    parts = split_clients(labels, 10, split="dirichlet", alpha=0.1, seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(300))
    skew = [np.bincount(labels[p], minlength=10).max() / len(p) for p in parts]
    assert np.mean(skew) > 0.5  # alpha=0.1: most of a client's data is one class
    with pytest.raises(ConfigError, match="12 clients need at least 12 examples, the dataset has 5"):
        split_clients(np.zeros(5), 12)


def test_quantized_clients_train_close_to_float_fedavg():
    data = toy_data()
    common = {"clients": 4, "rounds": 6, "lr": 0.1, "split": "iid", "batch_size": 16}
    fedavg = run_federated(toy_model(), data, FederatedConfig(method="fedavg", **common))
    fedaqt = run_federated(toy_model(), data, FederatedConfig(method="fedaqt", bits=8, **common))
    qat = run_federated(toy_model(), data, FederatedConfig(method="qat", bits=8, **common))
    assert fedavg.accuracy > 0.5
    assert fedaqt.accuracy >= fedavg.accuracy - 0.1 and qat.accuracy >= fedavg.accuracy - 0.1
    up = fedaqt.history[-1]
    assert up["bytes_up"] < 0.35 * fedavg.history[-1]["bytes_up"]
    assert up["client_state_bytes"] < 0.35 * fedavg.history[-1]["client_state_bytes"]


def test_a_failing_client_leaves_the_round_to_the_others(monkeypatch):
    real = server_module.train_client

    def flaky(architecture, payload, data, config, *, seed):
        if seed % 1009 == 1:  # client 1 of every round
            raise RuntimeError("client 1 lost its connection")
        return real(architecture, payload, data, config, seed=seed)

    monkeypatch.setattr(server_module, "train_client", flaky)
    result = run_federated(toy_model(), toy_data(), FederatedConfig(clients=3, rounds=2, split="iid"))
    assert all(h["failed"] == [1] and h["clients"] == [0, 2] for h in result.history)


def test_resume_continues_the_same_run_and_refuses_another(tmp_path):
    data = toy_data()
    config = FederatedConfig(clients=3, rounds=3, split="iid", bits=4)
    straight = run_federated(toy_model(), data, config)
    run_federated(toy_model(), data, config.replace(rounds=2), out_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"differs in \['bits'\]"):
        run_federated(toy_model(), data, config.replace(bits=8), out_dir=tmp_path, resume=True)
    resumed = run_federated(toy_model(), data, config, out_dir=tmp_path, resume=True)
    assert [h["accuracy"] for h in resumed.history] == [h["accuracy"] for h in straight.history]
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_bad_federated_input_is_explained():
    with pytest.raises(ConfigError, match="bits must be one of 2, 4, 8"):
        FederatedConfig(bits=3)
    with pytest.raises(ConfigError, match="clients_per_round"):
        FederatedConfig(clients=4, clients_per_round=5)
    tiny = SimpleNamespace(train=TensorDataset(torch.randn(4, 1, 16), torch.zeros(4, dtype=torch.long)),
                           test=TensorDataset(torch.randn(4, 1, 16), torch.zeros(4, dtype=torch.long)))  # fmt: skip
    with pytest.raises(ConfigError, match="10 clients need at least 10 examples"):
        run_federated(toy_model(), tiny, FederatedConfig(clients=10))
