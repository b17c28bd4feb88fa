"""Weight-only quantization: the kernels compute what the codes stand for, each method meets its defining
property (GPTQ and AWQ beat round-to-nearest on calibration data, HQQ needs no data), checkpoints reload exactly,
and bad settings get clear errors with the model left as it was."""

import copy

import pytest
import torch
from torch import nn

from effdl.core.errors import ConfigError, UnsupportedError
from effdl.models import create_model, example_batch, load_model, save_model
from effdl.prune import L1FilterPruneConfig, prune_
from effdl.quant import AWQConfig, GPTQConfig, HQQConfig, RTNConfig, WeightOnlyLinear, quantize_, weight_only_layers
from effdl.quant.weight_only import awq_input_scale, gptq, hqq, rtn
from effdl.quant.weight_only.math import pack_int4, unpack_int4

METHODS = [RTNConfig, GPTQConfig, AWQConfig, HQQConfig]


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


def _correlated_inputs(n=512, k=128, seed=0):
    """Inputs with correlated features and a few outlier channels, as in transformer activations."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / k**0.5
    x = torch.randn(n, k, generator=g) @ (torch.eye(k) + mix)
    x[:, :4] *= 20.0
    return x


@pytest.mark.parametrize("group", [32, 64, 128, 256])
def test_int4_kernel_equals_the_fake_quant_reference(group):
    torch.manual_seed(0)
    lin = nn.Linear(256, 64)
    q = WeightOnlyLinear.from_float(lin, bits=4, group_size=group)
    x = torch.randn(5, 256)
    assert q.kernel == "int4pack"
    ref = x @ q.dequantize().T + lin.bias
    assert _rel(q(x), ref) < 1e-2  # bfloat16 activations: about 3e-3
    exact = WeightOnlyLinear.from_float(lin, bits=4, group_size=group)
    exact.compute_dtype = "float32"
    assert _rel(exact(x), ref) < 1e-5


def test_int8_per_channel_symmetric_runs_the_int8_kernel_and_others_fall_back():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    x = torch.randn(3, 64)
    q8 = WeightOnlyLinear.from_float(lin, bits=8, group_size=None, symmetric=True)
    assert q8.kernel == "int8pack"
    assert _rel(q8(x), x @ q8.dequantize().T + lin.bias) < 1e-2
    assert _rel(q8.dequantize(), lin.weight.detach()) < 1e-2
    grouped = WeightOnlyLinear.from_float(lin, bits=8, group_size=32)
    assert grouped.kernel == "dequant"  # no int8 kernel for group-wise grids: same numbers, no speedup
    torch.testing.assert_close(grouped(x), x @ grouped.dequantize().T + lin.bias)
    odd = WeightOnlyLinear.from_float(nn.Linear(64, 10), bits=4, group_size=32)
    assert odd.kernel == "dequant"  # the int4 kernel needs a multiple of 16 outputs


def test_packing_round_trips_and_codes_stay_on_the_grid():
    codes = torch.randint(0, 16, (8, 64), dtype=torch.uint8)
    assert torch.equal(unpack_int4(pack_int4(codes)), codes)
    w = torch.randn(8, 64)
    g = rtn(w, 4, 32, symmetric=False)
    assert int(g.codes.max()) <= 15
    # the grid's error is at most half a step everywhere (min-max grid: no clipping)
    step = g.scale.float().repeat_interleave(32, dim=1)
    assert bool(((g.dequantize() - w).abs() <= step / 2 + 1e-3).all())
    sym = rtn(w, 4, 32, symmetric=True)
    assert not sym.offset.float().any()


def test_gptq_reduces_the_layers_output_error_against_rtn():
    x = _correlated_inputs()
    w = torch.randn(64, 128)
    h = 2 * x.T @ x / len(x)
    for group, act_order in [(32, False), (128, False), (32, True)]:
        out_err = lambda g: float(((x @ (w - g.dequantize()).T) ** 2).mean())  # noqa: E731
        assert out_err(gptq(w, h, 4, group, symmetric=False, act_order=act_order)) < 0.8 * out_err(
            rtn(w, 4, group, symmetric=False)
        ), (group, act_order)


def test_awq_scales_beat_rtn_on_outlier_features_and_hqq_needs_no_data():
    x = _correlated_inputs()
    w = torch.randn(64, 128)
    s, best, plain = awq_input_scale(w, x, x.abs().mean(0), 4, 128, symmetric=False)
    assert best < plain and not torch.equal(s, torch.ones_like(s))
    model = nn.Sequential(nn.Linear(128, 64))
    model[0].weight.data.copy_(w)
    ref = model(x).detach()
    errs = {}
    for cfg in [RTNConfig(group_size=128), AWQConfig(group_size=128), HQQConfig(group_size=128)]:
        m = copy.deepcopy(model)
        quantize_(m, cfg, example_inputs=x[:2], data=[x[i : i + 64] for i in range(0, 512, 64)])
        errs[cfg.method] = _rel(m(x).detach(), ref)
    assert errs["awq"] < errs["rtn"]
    lp = lambda g: float((w - g.dequantize()).abs().pow(0.7).sum())  # noqa: E731
    assert lp(hqq(w, 4, 32)) < lp(rtn(w, 4, 32, symmetric=False))


@pytest.mark.parametrize("config_type", METHODS)
def test_every_method_quantizes_every_linear_reloads_exactly_and_lists_float_layers(config_type, tmp_path):
    torch.manual_seed(0)
    model = create_model("test_gpt").eval()
    x = example_batch(model, 4)
    ref = model(x).detach()
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    config = config_type(bits=4, group_size=32)
    data = [(example_batch(model, 4, seed=s),) for s in range(3)] if config.needs_data else None  # RTN, HQQ: none
    report = quantize_(model, config, example_inputs=x, data=data)
    assert sorted(weight_only_layers(model)) == sorted(linears)
    assert {r["layer"] for r in report.details["float_layers"]} == {"tok_emb", "pos_emb"}
    assert report.details["kernels"] == {"int4pack": len(linears)}
    out = model(x)
    assert _rel(out, ref) < 0.2
    again = load_model(save_model(model, tmp_path / "q.safetensors"))
    assert torch.equal(again(x), out)
    assert report.after.size_bytes < 0.5 * report.before.size_bytes


def test_pruned_then_weight_only_model_reloads(tmp_path):
    model = create_model("test_gpt").eval()
    x = example_batch(model, 2)
    prune_(model, L1FilterPruneConfig(ratio=0.5), example_inputs=x)
    quantize_(model, RTNConfig(bits=8, group_size=None, symmetric=True), example_inputs=x)
    again = load_model(save_model(model, tmp_path / "pq.safetensors"))
    assert torch.equal(again(x), model(x))


def test_bad_settings_get_clear_errors():
    with pytest.raises(ConfigError, match="bits must be one of"):
        RTNConfig(bits=3)
    with pytest.raises(ConfigError, match="group_size must be one of"):
        GPTQConfig(group_size=48)
    with pytest.raises(ConfigError, match="no symmetric form"):
        HQQConfig(symmetric=True)
    model = nn.Sequential(nn.Linear(96, 32), nn.ReLU(), nn.Linear(32, 16))
    x = torch.randn(2, 96)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match=r"0 has 96 input features \(group sizes that divide it: 32\)"):
        quantize_(model, RTNConfig(group_size=64), example_inputs=x)
    with pytest.raises(ConfigError, match="GPTQ calibrates on data"):
        quantize_(model, GPTQConfig(group_size=32), example_inputs=x)
    with pytest.raises(UnsupportedError, match="no Linear layer"):
        quantize_(nn.Sequential(nn.Conv1d(1, 2, 3)), RTNConfig(), example_inputs=torch.randn(1, 1, 8))
    assert all(type(m) is not WeightOnlyLinear for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_failure_half_way_leaves_the_model_as_it_was(monkeypatch):
    import effdl.quant.weight_only.api as api

    model = create_model("test_gpt").eval()
    x = example_batch(model, 2)
    before = copy.deepcopy(model.state_dict())
    calls = []
    real = api.gptq

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # the last Linear layer
            raise RuntimeError("injected fault")
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "gptq", failing)
    with pytest.raises(RuntimeError, match="injected fault"):
        quantize_(model, GPTQConfig(group_size=32), example_inputs=x, data=[(x,)])
    assert not weight_only_layers(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
