import math

import pytest
import torch
from torch import nn

from effdl.core.errors import ConfigError, UnknownNameError
from effdl.nas import PROXIES, get_space, score_model, zico_score


def _batches(n=3, size=16, shape=(1, 40), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, *shape, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(n)]


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(40, 6), nn.ReLU(), nn.Linear(6, 10))


def test_zico_matches_a_direct_recomputation_from_per_batch_gradients():
    net, batches = _tiny(), _batches()
    expected = 0.0
    for layer in (net[1], net[3]):
        grads = []
        for x, y in batches:
            net.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            grads.append(layer.weight.grad.clone().flatten().double())
        g = torch.stack(grads)
        mean_abs, std = g.abs().mean(0), g.std(0, unbiased=False)
        expected += math.log(float((mean_abs[std > 0] / std[std > 0]).sum()))
    net.zero_grad()
    assert zico_score(net, batches) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", PROXIES.names())
def test_every_proxy_is_deterministic_and_leaves_the_model_unchanged(name):
    torch.manual_seed(0)
    model = get_space("mnist1d_cnn").build("c8-16_k5-3_s1-2_r1")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = _batches(2)
    a = score_model(model, batches, name)
    b = score_model(model, batches, name)
    assert a == b and math.isfinite(a)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_proxies_tell_networks_apart():
    space = get_space("mnist1d_cnn")
    torch.manual_seed(0)
    small, big = space.build("c4_k3_s2_r0"), space.build("c64-64_k5-5_s1-1_r1")
    batches = _batches(2)
    for name in ("params", "macs", "synflow", "zico", "naswot"):
        assert score_model(big, batches, name) > score_model(small, batches, name), name


def test_bad_input():
    batches = _batches(2)
    with pytest.raises(UnknownNameError, match=r"valid proxy names: .*zico"):
        score_model(_tiny(), batches, "zen")
    frozen = _tiny().requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        score_model(frozen, batches, "snip")
    with pytest.raises(ConfigError, match="size 1"):
        score_model(_tiny(), [(b[0][:1], b[1][:1]) for b in batches], "zico")
    with pytest.raises(ConfigError, match="at least 2 mini-batches"):
        score_model(_tiny(), batches[:1], "zico")
    with pytest.raises(ConfigError, match="at least one"):
        score_model(_tiny(), [], "params")


def test_a_callable_proxy_is_accepted():
    assert score_model(_tiny(), _batches(2), lambda m, b: 1.5) == 1.5
