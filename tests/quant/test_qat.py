import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from effdl.core.errors import ConfigError, UnsupportedError
from effdl.models import create_model
from effdl.quant import FakeQuantizer, QuantConfig, calibrate, dequantize_, prepare_, quantize_, quantized_layers
from effdl.quant.qat import FreezeQuantizers, OverflowPenalty
from effdl.quant.training import QuantizedWeightTraining
from effdl.train import TrainConfig, Trainer, evaluate


def _toy(n=512):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2 * n, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x[:n], y[:n]), TensorDataset(x[n:], y[n:])


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 2))


CFG = TrainConfig(epochs=4, batch_size=32, lr=1e-2, optimizer="adam", progress=False)


@pytest.mark.parametrize("lsq", [False, True])
def test_qat_trains_at_low_bits(lsq):
    train, test = _toy()
    model = _net()
    cfg = QuantConfig(bits_w=2, bits_a=4, lsq=lsq)
    quantize_(model, cfg, example_inputs=train.tensors[0][:64], data=[train.tensors[0][:256]])
    before = evaluate(model, test)["accuracy"]
    scales = [q.scale.detach().clone() for q in model.modules() if isinstance(q, FakeQuantizer)]
    Trainer(model, CFG).fit(train, test)
    after = evaluate(model, test)["accuracy"]
    assert after > max(before, 0.9)
    if lsq:
        learned = [q.scale for q in model.modules() if isinstance(q, FakeQuantizer)]
        assert all(isinstance(s, nn.Parameter) for s in learned)
        assert any(not torch.allclose(a, b.detach()) for a, b in zip(scales, learned, strict=True))
    w = model[0].weight_quant(model[0].weight)
    assert torch.unique(w / model[0].weight_quant.scale.reshape(-1, 1)).round().abs().max() <= 1  # ternary


def test_quantized_state_dict_reloads_into_a_fresh_quantized_model():
    train, _ = _toy()
    model = _net()
    cfg = QuantConfig(bits_w=4, bits_a=4, lsq=True)
    quantize_(model, cfg, example_inputs=train.tensors[0][:64])
    Trainer(model, CFG.replace(epochs=1)).fit(train)
    fresh = _net()
    prepare_(fresh, cfg)
    calibrate(fresh, [train.tensors[0][:8]])
    for q in fresh.modules():
        if isinstance(q, FakeQuantizer):
            q.make_learnable()
    fresh.load_state_dict(model.state_dict())
    x = train.tensors[0][:16]
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_binary_weights_take_two_values_per_channel():
    model = nn.Sequential(nn.Linear(16, 4))
    quantize_(model, QuantConfig(bits_w=1, bits_a=None), example_inputs=torch.randn(4, 16))
    w = model[0].weight_quant(model[0].weight).detach()
    for row, s in zip(w, model[0].weight_quant.scale, strict=True):
        assert set(row.tolist()) <= {float(s), -float(s)}
    assert torch.allclose(model[0].weight_quant.scale, model[0].weight.abs().mean(dim=1))


def test_fake_quant_8_bit_is_close_to_float_and_dequantize_restores():
    model = create_model("test_cnn1d").eval()
    x = torch.randn(32, 1, 40)
    ref = model(x)
    report = quantize_(model, QuantConfig(bits_w=8, bits_a=8), example_inputs=x)
    assert len(quantized_layers(model)) == 3
    assert (model(x) - ref).abs().max() < 0.05 * ref.abs().max()
    assert report.after.size_bytes < 0.4 * report.before.size_bytes
    assert [layer["bits_w"] for layer in report.details["layers"]] == [8, 8, 8]
    dequantize_(model)
    assert not quantized_layers(model)


def test_per_layer_bits_and_ignore():
    model = create_model("test_cnn1d").eval()
    cfg = QuantConfig(bits_w=8, bits_a=8, per_layer={"classifier": 2}, ignore=(r"features\.0",))
    quantize_(model, cfg, example_inputs=torch.randn(4, 1, 40))
    layers = quantized_layers(model)
    assert "features.0" not in layers
    assert layers["classifier"].weight_quant.bits == 2 and layers["features.3"].weight_quant.bits == 8


def test_bad_quantization_input_is_explained():
    with pytest.raises(ConfigError, match="bits_a must be an integer in"):
        QuantConfig(bits_a=12)
    with pytest.raises(ConfigError, match="needs quantized activations"):
        QuantConfig(accumulator_bits=8, bits_a=None)
    with pytest.raises(ConfigError, match="unknown observer"):
        QuantConfig(observer="kl-divergence")
    model = nn.Sequential(nn.Embedding(10, 4))
    with pytest.raises(UnsupportedError, match="no layer effdl can quantize"):
        quantize_(model, QuantConfig(), example_inputs=torch.zeros(2, 3, dtype=torch.long))
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    with pytest.raises(UnsupportedError, match="cannot quantize: 1 \\(LayerNorm\\)"):
        quantize_(model, QuantConfig(per_layer={"1": 4}), example_inputs=torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="calibration got no data"):
        quantize_(nn.Sequential(nn.Linear(4, 4)), QuantConfig(), example_inputs=torch.zeros(2, 4), data=[])
    m = nn.Sequential(nn.Linear(4, 4))
    quantize_(m, QuantConfig(), example_inputs=torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_(m, QuantConfig(), example_inputs=torch.zeros(2, 4))


def test_overflow_penalty_adds_to_the_loss_when_accumulators_overflow():
    train, _ = _toy()
    model = _net()
    quantize_(model, QuantConfig(bits_w=8, bits_a=8, accumulator_bits=8), example_inputs=train.tensors[0][:64])
    model.train()
    x, y = train.tensors[0][:64], train.tensors[1][:64]
    out = model(x)
    loss = nn.functional.cross_entropy(out, y)

    class T:  # the parts of Trainer the callback reads
        pass

    t = T()
    t.model = model
    penalized = OverflowPenalty(weight=1.0).on_loss(t, (x, y), out, loss)
    assert penalized > loss
    assert model[0].accumulator.overflows > 0


def test_overflow_penalty_pushes_learned_steps_up():
    # with LSQ the integers shrink only if the steps grow; the penalty's gradient must say so
    train, _ = _toy()
    model = _net()
    x = train.tensors[0][:64]
    quantize_(model, QuantConfig(bits_w=8, bits_a=8, accumulator_bits=8, lsq=True), example_inputs=x)
    model.train()
    model(x)
    layer = model[0]
    assert layer.accumulator.penalty > 0
    layer.accumulator.penalty.backward()
    assert layer.input_quant.scale.grad < 0
    assert (layer.weight_quant.scale.grad <= 0).all() and (layer.weight_quant.scale.grad < 0).any()


def test_freeze_quantizers_stops_range_updates():
    train, _ = _toy()
    model = _net()
    quantize_(model, QuantConfig(bits_w=4, bits_a=4), example_inputs=train.tensors[0][:64])
    cb = FreezeQuantizers(epoch=0)

    class T:
        pass

    t = T()
    t.model = model
    cb.on_epoch_start(t, 0)
    s = model[2].input_quant.scale.clone()
    model.train()(train.tensors[0][:64] * 10)
    assert torch.equal(model[2].input_quant.scale, s)


@pytest.mark.parametrize("method", ["binaryconnect", "stochastic", "deterministic"])
def test_quantized_weight_training_keeps_weights_on_the_grid(method):
    train, test = _toy()
    model = _net()
    cb = QuantizedWeightTraining(method, bits=2)
    Trainer(model, CFG.replace(epochs=2), callbacks=[cb]).fit(train, test)
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            codes = m.weight / cb.scales[name]
            assert torch.allclose(codes, codes.round(), atol=1e-4)
            assert codes.abs().max() <= 1 + 1e-4
    if method == "binaryconnect":
        assert not torch.allclose(cb.shadow["0"], model[0].weight)
    with pytest.raises(ConfigError, match="method must be one of"):
        QuantizedWeightTraining("shadow", bits=2)
