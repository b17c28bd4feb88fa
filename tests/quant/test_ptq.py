"""PTQ techniques against their defining properties, the QDQ lowering against the simulation it lowers, the runtime
choice with fp32 as a candidate, the diagnosis and accuracy-controlled PTQ."""

import copy
import logging

import numpy as np
import pytest
import torch
from torch import nn

from effdl.core.config import Config
from effdl.core.errors import ConfigError, ShapeError, UnsupportedError
from effdl.measure.capture import flatten_tensors
from effdl.models import create_model, example_batch
from effdl.quant import (
    Int8Config,
    QuantConfig,
    accuracy_controlled_config,
    adaround_,
    convert_int8,
    correct_bias_,
    diagnose_quantization,
    equalize_,
    float_view,
    lower_qdq,
    quantize_,
    quantized_layers,
    reestimate_bn_,
)
from effdl.quant.modules import FakeQuantizer
from effdl.quant.ptq import equalization_pairs

pytest.importorskip("onnxruntime", reason="the QDQ lowering runs in onnxruntime (pip install 'effdl[onnx]')")


def depthwise_net():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(1, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(),
        nn.Conv1d(8, 8, 3, padding=1, groups=8), nn.BatchNorm1d(8), nn.ReLU(),
        nn.Conv1d(8, 16, 1), nn.BatchNorm1d(16), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 4),
    )  # fmt: skip
    with torch.no_grad():  # uneven channel ranges, the case equalization is for
        net[3].weight.mul_(torch.logspace(-2, 1, 8).reshape(8, 1, 1))
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def run_session(onnx_bytes, x):
    from effdl.export.onnx import onnx_session

    s = onnx_session(onnx_bytes, 1)
    return torch.from_numpy(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0])


# ----------------------------------------------------------------------------------------------------------------
# what runs is what was simulated


@pytest.mark.parametrize("name", ["test_cnn1d", "test_resnet", "test_mobilenetv2", "test_vit", "test_gpt"])
def test_real_int8_equals_the_fake_quant_model_within_one_step(name):
    model = create_model(name).eval()
    x = example_batch(model, 8)
    quantize_(model, QuantConfig(), example_inputs=x, data=[example_batch(model, 8) for _ in range(3)])
    with torch.no_grad():
        sim = flatten_tensors(model(x))[0]
    real = run_session(lower_qdq(model, x), x)
    step = float(sim.max() - sim.min()) / 255
    assert float((real - sim).abs().max()) <= step


def test_convert_int8_lowers_effdl_techniques_and_reports_agreement():
    model = depthwise_net()
    data = [torch.randn(16, 1, 32) for _ in range(4)]
    config = Int8Config(runtime="onnxruntime", equalize=True, bias_correction=True)
    q = convert_int8(model, config, example_inputs=data[0], data=data)
    lowering = q.meta["lowering"]
    assert lowering["agreement"]["steps"] <= 1.0
    assert lowering["float_layers"] == {}  # every layer runs in an int8 kernel (requantized where needed)
    assert "bias_correction" in lowering["techniques"]
    with torch.no_grad():
        assert np.isfinite(q.accuracy["onnxruntime"]) and q.accuracy["onnxruntime"] > 25


def test_a_users_fake_quant_model_is_lowered_with_its_own_scales():
    model = depthwise_net()
    data = [torch.randn(16, 1, 32) for _ in range(2)]
    quantize_(model, QuantConfig(observer="percentile"), example_inputs=data[0], data=data)
    q = convert_int8(model, Int8Config(runtime="onnxruntime", requantize=False), example_inputs=data[0], data=data)
    assert q.meta["lowering"]["simulation"].startswith("the fake-quant model given")
    with torch.no_grad():
        sim = model(data[0])
    assert float((q(data[0]) - sim).abs().max()) <= float(sim.max() - sim.min()) / 255


def test_lowering_refuses_what_no_int8_kernel_runs():
    x = torch.randn(8, 4)
    m = nn.Sequential(nn.Linear(4, 4))
    quantize_(m, QuantConfig(bits_a=4), example_inputs=x)
    with pytest.raises(UnsupportedError, match="int8 runtimes run 8-bit activations"):
        lower_qdq(m, x)
    m = nn.Sequential(nn.Linear(4, 4))
    quantize_(m, QuantConfig(bits_a=8, accumulator_bits=12), example_inputs=x)
    with pytest.raises(UnsupportedError, match="accumulator"):
        lower_qdq(m, x)
    with pytest.raises(UnsupportedError, match="needs a fake-quantized model"):
        lower_qdq(nn.Linear(4, 4), x)


# ----------------------------------------------------------------------------------------------------------------
# runtimes: fp32 is a candidate, fallbacks are reported


def test_fp32_is_deployed_when_every_int8_runtime_is_slower(monkeypatch, caplog, tmp_path):
    from effdl.measure import latency

    class Stats:
        def __init__(self, ms):
            self.median_ms = ms

    def fake_compare(models, x, threads=None):
        return {k: Stats(1.0 if k == "fp32" else 2.0) for k in models}

    monkeypatch.setattr(latency, "compare_latency", fake_compare)
    model = create_model("test_cnn1d").eval()
    x = torch.randn(8, 1, 40)
    with caplog.at_level(logging.WARNING):
        q = convert_int8(model, Int8Config(), example_inputs=x)
    assert q.runtime == "fp32" and "slower than fp32" in q.reason and "slower than fp32" in caplog.text
    torch.testing.assert_close(q(x), model(x))
    from effdl.quant import load_int8

    again = load_int8(q.save(tmp_path / "m"))
    torch.testing.assert_close(again(x), model(x))
    kept = convert_int8(model, Int8Config(fallback=False), example_inputs=x)
    assert kept.runtime != "fp32" and "fallback=False" in kept.reason


def test_without_onnxruntime_the_fallback_is_reported(monkeypatch, caplog):
    from effdl.quant import int8

    monkeypatch.setattr(int8, "_has_onnxruntime", lambda: False)
    model = create_model("test_cnn1d").eval()
    x = torch.randn(8, 1, 40)
    with caplog.at_level(logging.WARNING):
        q = convert_int8(model, Int8Config(fallback=False), example_inputs=x)
    assert q.runtime == "torch-ao"
    assert "not installed" in q.skipped["onnxruntime"] and "onnxruntime is not installed" in caplog.text
    with pytest.raises(UnsupportedError, match="cannot carry effdl's PTQ techniques"):
        convert_int8(model, Int8Config(runtime="torch-ao", equalize=True), example_inputs=x)


def test_an_unreachable_sqnr_bar_says_what_was_reached():
    model = create_model("test_cnn1d").eval()
    x = torch.randn(8, 1, 40)
    with pytest.raises(UnsupportedError, match=r"no int8 runtime reached min_sqnr_db=200.*best: \d+\.\d dB"):
        convert_int8(model, Int8Config(min_sqnr_db=200.0, fallback=False), example_inputs=x)
    q = convert_int8(model, Int8Config(min_sqnr_db=200.0), example_inputs=x)
    assert q.runtime == "fp32" and "min_sqnr_db" in q.reason


# ----------------------------------------------------------------------------------------------------------------
# techniques and their defining properties


def test_equalization_keeps_the_float_function_and_matches_ranges():
    model = depthwise_net()
    from effdl.quant import fold_batchnorm_

    x = torch.randn(16, 1, 32)
    fold_batchnorm_(model, example_inputs=x)
    with torch.no_grad():
        before = model(x)
    pairs = equalize_(model, x)
    assert pairs == [("0", "3"), ("3", "6")]
    with torch.no_grad():
        after = model(x)
    assert float((after - before).abs().max() / before.abs().max()) <= 1e-5
    r1 = model[3].weight.detach().abs().flatten(1).amax(1)  # depthwise outputs
    r2 = model[6].weight.detach().abs().transpose(0, 1).flatten(1).amax(1)  # next layer's inputs
    torch.testing.assert_close(r1, r2, rtol=0.05, atol=1e-6)


def test_equalization_skips_what_is_not_homogeneous():
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU6(), nn.Linear(4, 2), nn.Sigmoid(), nn.Linear(2, 2))
    assert equalization_pairs(m, torch.randn(3, 4)) == []
    tied = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    tied[2].weight = tied[0].weight
    assert equalization_pairs(tied, torch.randn(3, 4)) == []


def test_smoothquant_migration_keeps_the_float_function_and_flattens_the_outlier():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4)).eval()
    scale = torch.ones(8)
    scale[3] = 80.0  # one outlier input channel
    data = [torch.randn(32, 8) * scale for _ in range(3)]
    with torch.no_grad():
        ref = model(data[0])
    report = quantize_(model, QuantConfig(smoothquant=0.5), example_inputs=data[0], data=data)
    assert report.details["techniques"]["smoothquant"] == ["0", "2"]
    with torch.no_grad(), float_view(model):
        got = model(data[0])
    assert float((got - ref).abs().max() / ref.abs().max()) <= 1e-5
    layer = quantized_layers(model)["0"]
    assert float(layer.smooth_scale[3]) > 4 * float(layer.smooth_scale.median())


def test_smoothquant_helps_an_outlier_channel_and_lowers_to_onnxruntime():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 4)).eval()
    scale = torch.ones(8)
    scale[3] = 200.0
    data = [torch.randn(64, 8) * scale for _ in range(3)]
    with torch.no_grad():
        ref = base(data[0])
    errors = {}
    for alpha in (None, 0.5):
        m = copy.deepcopy(base)
        quantize_(m, QuantConfig(smoothquant=alpha), example_inputs=data[0], data=data)
        with torch.no_grad():
            errors[alpha] = float((m(data[0]) - ref).pow(2).mean())
        real = run_session(lower_qdq(m, data[0]), data[0])
        with torch.no_grad():
            sim = m(data[0])
        assert float((real - sim).abs().max()) <= float(sim.max() - sim.min()) / 255
    assert errors[0.5] < errors[None]


def test_adaround_lowers_each_layers_reconstruction_error():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    data = [torch.randn(64, 16) for _ in range(4)]
    quantize_(model, QuantConfig(bits_w=3, bits_a=8), example_inputs=data[0], data=data)
    result = adaround_(model, data, iterations=300)
    assert set(result) == {"0", "2"}
    for row in result.values():
        assert row["adaround"] < row["nearest"]
    for layer in quantized_layers(model).values():  # the weights sit on the grid: the quantizer keeps the codes
        w = layer.weight.detach()
        torch.testing.assert_close(layer.weight_quant(w), w)


def test_bias_correction_removes_the_mean_output_shift():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8)).eval()
    data = [torch.randn(128, 16) + 2.0 for _ in range(2)]
    float_model = copy.deepcopy(model)
    quantize_(model, QuantConfig(bits_w=2, bits_a=None), example_inputs=data[0], data=data)

    def shift():
        with torch.no_grad():
            return (float_model(data[0]) - model(data[0])).mean(0).abs().max()

    before = shift()
    assert correct_bias_(model, data[:1]) == {}
    assert shift() < 1e-4 < before
    no_bias = nn.Sequential(nn.Linear(4, 2, bias=False))
    quantize_(no_bias, QuantConfig(bits_w=2, bits_a=None), example_inputs=torch.randn(4, 4))
    assert "bias=False" in correct_bias_(no_bias, [torch.randn(4, 4)])["0"]


def test_bn_reestimation_moves_the_statistics_by_the_quantization_shift():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU()).eval()
    data = [torch.randn(64, 1, 16) + 0.5 for _ in range(2)]
    w, mean, var = model[0].weight.detach().clone(), model[1].running_mean.clone(), model[1].running_var.clone()
    assert reestimate_bn_(model, data, example_inputs=data[0], bits=3) == ["1"]
    torch.testing.assert_close(model[0].weight, w)  # the float weights are back
    q = FakeQuantizer(3, signed=True, axis=0)
    with torch.no_grad():
        yf = torch.cat([nn.functional.conv1d(x, w, model[0].bias) for x in data]).double()
        yq = torch.cat([nn.functional.conv1d(x, q(w), model[0].bias) for x in data]).double()
    shift = (yq.mean(dim=(0, 2)) - yf.mean(dim=(0, 2))).float()
    assert float(shift.abs().max()) > 1e-3  # 3-bit weights do shift the statistics
    torch.testing.assert_close(model[1].running_mean, mean + shift, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model[1].running_var, var)


def test_techniques_together_beat_plain_ptq_on_a_depthwise_net():
    model = depthwise_net()
    data = [torch.randn(32, 1, 32) for _ in range(4)]
    with torch.no_grad():
        ref = model(data[0])
    errors = {}
    for name, config in {
        "plain": QuantConfig(bits_w=4, bits_a=8),
        "all": QuantConfig(bits_w=4, bits_a=8, bn_reestimate=True, equalize=True, adaround=200, bias_correction=True),
    }.items():
        m = copy.deepcopy(model)
        quantize_(m, config, example_inputs=data[0], data=data)
        with torch.no_grad():
            errors[name] = float((m(data[0]) - ref).pow(2).mean())
    assert errors["all"] < 0.5 * errors["plain"]


def test_per_layer_observer_and_entropy_calibration():
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    quantize_(m, QuantConfig(per_layer_observer={"2": "entropy"}), example_inputs=torch.randn(64, 4))
    layers = quantized_layers(m)
    assert type(layers["0"].input_quant.observer).__name__ == "MinMaxObserver"
    assert type(layers["2"].input_quant.observer).__name__ == "EntropyObserver"


def test_quantized_checkpoint_with_smoothing_reloads(tmp_path):
    from effdl.models import load_model, save_model

    model = create_model("test_mlp").eval()
    x = example_batch(model, 16)
    quantize_(model, QuantConfig(smoothquant=0.5, equalize=True), example_inputs=x)
    path = save_model(model, tmp_path / "q.safetensors")
    again = load_model(path)
    torch.testing.assert_close(again(x), model(x))


# ----------------------------------------------------------------------------------------------------------------
# diagnosis and accuracy control


def outlier_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    with torch.no_grad():  # one huge input channel of layer 2 (read with tiny weights): its 8-bit grid loses the rest
        net[0].bias[5] = 80.0
        net[2].weight[:, 5] = 1e-3
    return net


def test_diagnosis_blames_the_outlier_layer():
    net = outlier_net()
    data = [torch.randn(64, 8) for _ in range(2)]
    d = diagnose_quantization(net, QuantConfig(), example_inputs=data[0], data=data)
    assert [row.layer for row in d.layers] == ["0", "2", "4"]
    assert d.worst(1) == ["2"] and d.layers[1].outlier_channels == [5]
    assert d.layers[-1].sqnr_cumulative_db == pytest.approx(d.sqnr_all_db)
    assert "SQNR alone" in d.to_table() and d.to_dict()["layers"][1]["layer"] == "2"


def test_accuracy_controlled_ptq_meets_a_tolerance_plain_ptq_misses():
    net = outlier_net()
    data = [torch.randn(64, 8) for _ in range(2)]
    x = torch.randn(256, 8)
    with torch.no_grad():
        labels = net(x).argmax(1)

    def agreement(m):
        with torch.no_grad():
            return float((m(x).argmax(1) == labels).float().mean())

    config = QuantConfig()
    plain = copy.deepcopy(net)
    quantize_(plain, config, example_inputs=data[0], data=data)
    assert agreement(plain) < 0.99
    result = accuracy_controlled_config(net, config, metric=agreement, tolerance=0.01, example_inputs=data[0],
                                        data=data)  # fmt: skip
    assert result.kept_float[0] == "2" and "2" in result.config.ignore
    controlled = copy.deepcopy(net)
    quantize_(controlled, result.config, example_inputs=data[0], data=data)
    assert agreement(controlled) >= 0.99
    assert 0 < result.float_weight_share < 0.9


def test_bad_ptq_input_is_explained():
    with pytest.raises(ConfigError, match="unknown observer 'kl' for layers 'fc'"):
        QuantConfig(per_layer_observer={"fc": "kl"})
    with pytest.raises(ConfigError, match=r"observer must be one of .*'entropy'.*got observer='kl'"):
        Int8Config(observer="kl")
    with pytest.raises(ConfigError, match="smoothquant must be in"):
        Int8Config(smoothquant=2.0)
    with pytest.raises(ConfigError, match="adaround"):
        QuantConfig(adaround=-1)
    with pytest.raises(ConfigError, match="equalise"):  # an unknown technique names itself
        Config.from_dict({"type": "Int8Config", "equalise": True})
    model = create_model("test_cnn1d").eval()
    with pytest.raises(ConfigError, match="calibration got no data"):
        convert_int8(model, Int8Config(runtime="onnxruntime"), example_inputs=torch.randn(4, 1, 40), data=[])
    with pytest.raises(ShapeError, match="expects inputs of shape"):
        convert_int8(model, Int8Config(runtime="onnxruntime"), example_inputs=torch.randn(4, 1, 40),
                     data=[torch.randn(4, 3, 7)])  # fmt: skip
    with pytest.raises(ConfigError, match=r"cannot be met.*best metric reached"):
        accuracy_controlled_config(outlier_net(), QuantConfig(), metric=lambda m: 0.0 if quantized_layers(m) else 1.0,
                                   tolerance=0.0, example_inputs=torch.randn(8, 8), max_float=0.34)  # fmt: skip


def test_fake_quant_module_state_is_clean_after_lowering():
    m = nn.Sequential(nn.Linear(4, 4))
    x = torch.randn(8, 4)
    quantize_(m, QuantConfig(), example_inputs=x)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    lower_qdq(m, x)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not any(q.onnx_qdq for q in m.modules() if isinstance(q, FakeQuantizer))
