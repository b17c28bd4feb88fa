import pytest
import torch
from torch import nn

from effdl.core.errors import ConfigError
from effdl.quant import FakeQuantizer, fold_batchnorm_
from effdl.quant.math import (
    dequantize,
    fake_quantize,
    fixed_point_multiplier,
    lsq_fake_quantize,
    qparams_from_range,
    qrange,
    quantize,
    requantize,
    stochastic_round,
    wrap_around,
)
from effdl.quant.observers import MinMaxObserver, MovingAverageObserver, MSEObserver, PercentileObserver


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_round_trip_error_within_half_a_step(bits, symmetric):
    x = torch.randn(10_000) * 3 + (0 if symmetric else 1)
    signed = symmetric
    s, z = qparams_from_range(x.min(), x.max(), bits, symmetric=symmetric, signed=signed)
    qmin, qmax = qrange(bits, signed=signed)
    x_hat = dequantize(quantize(x, s, z, qmin, qmax), s, z)
    assert (x_hat - x).abs().max() <= s / 2 + 1e-5
    q = quantize(x, s, z, qmin, qmax)
    assert q.min() >= qmin and q.max() <= qmax and torch.equal(q, q.round())


def test_per_channel_scales_are_each_channels_own_range():
    w = torch.randn(6, 4, 3) * torch.arange(1, 7).reshape(6, 1, 1)
    obs = MinMaxObserver(axis=0)
    obs.update(w)
    s, z = obs.qparams(8, symmetric=True, signed=True)
    expected = w.abs().flatten(1).max(dim=1).values / 127
    assert torch.allclose(s, expected) and torch.equal(z, torch.zeros(6))
    x_hat = dequantize(quantize(w, s, z, -127, 127, axis=0), s, z, axis=0)
    assert ((x_hat - w).abs() <= s.reshape(6, 1, 1) / 2 + 1e-6).all()


def test_affine_range_contains_zero_exactly():
    s, z = qparams_from_range(torch.tensor(0.5), torch.tensor(2.0), 8, symmetric=False, signed=False)
    zero = dequantize(quantize(torch.tensor(0.0), s, z, 0, 255), s, z)
    assert float(zero) == 0.0


def test_binary_and_ternary_codes():
    assert qrange(1, signed=True) == (-1, 1)
    q = quantize(torch.tensor([-0.3, 0.0, 2.0]), torch.tensor(1.0), torch.tensor(0.0), -1, 1, binary=True)
    assert q.tolist() == [-1.0, 1.0, 1.0]
    t = quantize(torch.tensor([-0.3, 0.0, 2.0]), torch.tensor(1.0), torch.tensor(0.0), -1, 1)
    assert t.tolist() == [0.0, 0.0, 1.0]  # ternary
    assert qrange(2, signed=True) == (-1, 1) and qrange(2, signed=True, narrow=False) == (-2, 1)


def test_ste_gradient_is_one_inside_and_zero_where_clipped():
    x = torch.tensor([-10.0, -0.3, 0.0, 0.26, 0.9, 10.0], requires_grad=True)
    y = fake_quantize(x, torch.tensor(0.25), torch.tensor(0.0), -4, 4)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert g.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    ref = torch.fake_quantize_per_tensor_affine(x.detach(), 0.25, 0, -4, 4)
    assert torch.equal(y.detach(), ref)


def test_lsq_scale_gradient_matches_the_paper():
    # LSQ eq. 5: d x_hat / d s = -x/s + round(x/s) inside, qmin / qmax outside
    x = torch.tensor([0.3, -0.7, 9.0, -9.0])
    s = torch.tensor(0.5, requires_grad=True)
    y = lsq_fake_quantize(x, s, torch.tensor(0.0), -7, 7, grad_scale=0.5)
    (g,) = torch.autograd.grad(y.sum(), s)
    v = x / 0.5
    inside = torch.round(v[:2]) - v[:2]
    assert torch.isclose(g, 0.5 * (inside.sum() + 7 - 7))
    x2 = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(lsq_fake_quantize(x2, torch.tensor(0.5), torch.tensor(0.0), -7, 7).sum(), x2)
    assert gx.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_stochastic_rounding_is_unbiased():
    g = torch.Generator().manual_seed(1)
    x = torch.full((50_000,), 2.7)
    r = stochastic_round(x, g)
    assert set(r.unique().tolist()) == {2.0, 3.0}
    assert abs(float(r.mean()) - 2.7) < 0.01


def test_fixed_point_requantization_matches_float_rounding():
    m = torch.rand(50) * 0.01 + 1e-5
    m0, shift = fixed_point_multiplier(m)
    assert ((m0.double() / 2.0 ** shift.double() - m.double()).abs() / m.double()).max() < 2**-30
    acc = torch.randint(-(2**20), 2**20, (50, 200))
    got = requantize(acc, m0, shift, axis=0)
    exact = acc.double() * (m0.double() / 2.0 ** shift.double()).reshape(-1, 1)
    ref = torch.sign(exact) * torch.floor(exact.abs() + 0.5)  # half away from zero
    assert torch.equal(got, ref.long())
    with pytest.raises(ConfigError, match="positive"):
        fixed_point_multiplier(torch.tensor([0.0]))


def test_wrap_around_is_twos_complement():
    acc = torch.arange(-300, 300)
    wrapped = wrap_around(acc, 8)
    ref = torch.tensor([((int(a) + 128) % 256) - 128 for a in acc])
    assert torch.equal(wrapped, ref)
    # modular arithmetic: wrapping every partial sum equals wrapping the total
    parts = torch.randint(-100, 100, (1000,))
    partial = torch.tensor(0)
    for p in parts:
        partial = wrap_around(partial + p, 8)
    assert int(partial) == int(wrap_around(parts.sum(), 8))


def test_bits_out_of_range_are_refused():
    for bits in (0, 9, 2.5, True):
        with pytest.raises(ConfigError, match="must be an integer in"):
            qrange(bits, signed=True)


def test_observers():
    x = torch.cat([torch.randn(5000, generator=torch.Generator().manual_seed(0)), torch.tensor([40.0])])
    mm, pct, mse = MinMaxObserver(), PercentileObserver(percentile=99.0), MSEObserver()
    for o in (mm, pct, mse):
        o.update(x)
    assert float(mm.max_val) == 40.0
    assert float(pct.max_val) < 5.0
    s_mm, _ = mm.qparams(4, symmetric=True, signed=True)
    s_mse, _ = mse.qparams(4, symmetric=True, signed=True)
    assert s_mse < s_mm
    ema = MovingAverageObserver(momentum=0.5)
    ema.update(torch.tensor([0.0, 2.0]))
    ema.update(torch.tensor([0.0, 4.0]))
    assert float(ema.max_val) == 3.0
    with pytest.raises(ConfigError, match="seen no data"):
        MinMaxObserver().qparams(8, symmetric=True, signed=True)


def test_observer_state_round_trips():
    o = MinMaxObserver(axis=0)
    o.update(torch.randn(4, 3))
    o2 = MinMaxObserver(axis=0)
    o2.load_state_dict(o.state_dict())
    assert torch.equal(o2.max_val, o.max_val)


@pytest.mark.parametrize("dim", [1, 2])
def test_bn_folding_preserves_outputs(dim):
    conv = nn.Conv1d if dim == 1 else nn.Conv2d
    bn = nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d
    m = nn.Sequential(conv(3, 8, 3, bias=False), bn(8), nn.ReLU(), conv(8, 4, 3), bn(4), nn.Flatten())
    m.add_module("fc", nn.Linear(16, 6))
    m.add_module("bn_fc", nn.BatchNorm1d(6))
    with torch.no_grad():  # non-trivial running statistics
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    m.eval()
    x = torch.randn(5, 3, 8) if dim == 1 else torch.randn(5, 3, 6, 6)
    ref = m(x)
    pairs = fold_batchnorm_(m)
    assert len(pairs) == 3
    assert not any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in m.modules())
    assert torch.allclose(m(x), ref, atol=1e-5)


def test_bn_with_two_consumers_is_not_folded():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv1d(2, 2, 1), nn.BatchNorm1d(2)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    m = Branch().eval()
    assert fold_batchnorm_(m) == []


def test_fake_quantizer_weight_scale_follows_weights_in_training():
    q = FakeQuantizer(4, signed=True, axis=0)
    q.train()
    q(torch.ones(2, 3))
    q(torch.full((2, 3), 2.0))
    assert torch.allclose(q.scale, torch.full((2,), 2.0 / 7))


def test_wide_accumulators_leave_values_alone():
    from effdl.quant import Accumulator

    y = torch.randn(4, 3, 5) * 1000
    s = torch.tensor([0.01, 0.02, 0.5])
    for bits, mode in ((32, "wrap"), (32, "saturate"), (24, "wrap")):
        out = Accumulator(bits, mode=mode)(y, s, channel_axis=1)
        assert torch.allclose(out, torch.round(y / s.reshape(1, 3, 1)) * s.reshape(1, 3, 1)), (bits, mode)
