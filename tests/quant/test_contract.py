"""The quantization contract every registered model passes: simulated W8A8 stays close to float (SQNR floor),
the quantized checkpoint reloads bit for bit, and real int8 runs, agrees with float and reloads (or says clearly
that it cannot)."""

import copy

import pytest
import torch

from effdl.models import MODELS, create_model, example_batch, load_model, save_model
from effdl.quant import Int8Config, QuantConfig, convert_int8, load_int8, quantize_

MODELS_UNDER_TEST = [n for n in MODELS.names() if n.startswith("test_")]


def _model(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    return model, example_batch(model, 16, seed=1)


def sqnr_db(reference, approx):
    return float(10 * torch.log10(reference.pow(2).mean() / (reference - approx).pow(2).mean().clamp_min(1e-20)))


@pytest.mark.parametrize("name", MODELS_UNDER_TEST)
def test_fake_quant_w8a8_is_close_to_float_and_reloads(name, tmp_path):
    model, x = _model(name)
    with torch.no_grad():
        ref = model(x)
    q = copy.deepcopy(model)
    report = quantize_(q, QuantConfig(bits_w=8, bits_a=8), example_inputs=x)
    with torch.no_grad():
        out = q(x)
    assert sqnr_db(ref, out) > 25.0, name  # 8-bit weights and inputs: about 30-45 dB on these models
    weights = sum(layer["weights"] for layer in report.details["layers"])
    # each quantized weight goes from 4 bytes to 1 (LayerNorms, embeddings stay float; scales are extra)
    assert report.after.size_bytes < report.before.size_bytes - 2.5 * weights
    assert 0 < report.after.macs <= report.before.macs  # the same multiply-accumulates (BatchNorm folded away)
    again = load_model(save_model(q, tmp_path / "q.safetensors"))
    with torch.no_grad():
        assert torch.equal(again(x), out)


@pytest.mark.parametrize("name", MODELS_UNDER_TEST)
def test_real_int8_runs_agrees_and_reloads(name, tmp_path):
    pytest.importorskip("onnxruntime")
    model, x = _model(name)
    q = convert_int8(model, Int8Config(runtime="onnxruntime"), example_inputs=x)
    with torch.no_grad():
        ref = model(x)
    out = q(x)
    assert out.shape == ref.shape and sqnr_db(ref, out) > 15.0, name
    again = load_int8(q.save(tmp_path / "q"))
    assert torch.equal(again(x), out)
