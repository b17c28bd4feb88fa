import pytest
import torch

from effdl.core.errors import ConfigError, UnsupportedError
from effdl.models import create_model
from effdl.quant import QuantConfig, quantize_
from effdl.quant.integer import IntegerEngine


def _model(seed=0):
    torch.manual_seed(seed)
    m = create_model("cnn1d")
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _fake_codes(model):
    codes, hooks = {}, []
    for name, mod in model.named_modules():
        if hasattr(mod, "input_quant") and mod.input_quant is not None:
            q = mod.input_quant

            def hook(_m, args, name=name, q=q):
                codes[name] = q.codes(args[0])

            hooks.append(mod.register_forward_pre_hook(hook))
    return codes, hooks


@pytest.mark.parametrize(("bits_w", "bits_a"), [(8, 8), (4, 4)])
def test_integer_engine_matches_fake_quant_within_one_code(bits_w, bits_a):
    m = _model()
    g = torch.Generator().manual_seed(1)
    calib = [torch.randn(64, 1, 40, generator=g) for _ in range(4)]
    quantize_(m, QuantConfig(bits_w=bits_w, bits_a=bits_a), example_inputs=calib[0], data=calib)
    x = torch.randn(256, 1, 40, generator=g)
    codes, hooks = _fake_codes(m)
    with torch.no_grad():
        ref = m(x)
    for h in hooks:
        h.remove()
    engine = IntegerEngine(m, accumulator_bits=32)
    out = engine(x)
    mismatched = total = 0
    for name, fq in codes.items():
        diff = (engine.codes[name] - fq).abs()
        assert int(diff.max()) <= 1, name  # the requantization rounding bound
        mismatched += int((diff > 0).sum())
        total += diff.numel()
    assert torch.equal(engine.codes["features.0"], codes["features.0"])  # first layer: same float input
    assert mismatched / total < 1e-3
    assert all(st.overflows == 0 for st in engine.stats.values())
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.99
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_engine_is_exact_where_codes_agree():
    # a single quantized Linear: the accumulator times its scale is the fake-quant output up to float32 rounding
    m = torch.nn.Sequential(torch.nn.Linear(20, 5)).eval()
    x = torch.randn(32, 20)
    quantize_(m, QuantConfig(bits_w=4, bits_a=4), example_inputs=x)
    out = IntegerEngine(m)(x)
    assert torch.allclose(out, m(x), rtol=1e-5, atol=1e-5)


def test_overflow_statistics_and_narrow_accumulators():
    m = _model()
    x = torch.randn(64, 1, 40)
    quantize_(m, QuantConfig(bits_w=8, bits_a=8), example_inputs=x)
    wide, narrow = IntegerEngine(m, accumulator_bits=32), IntegerEngine(m, accumulator_bits=12)
    wide(x)
    out = narrow(x)
    needed = max(st.bits_needed for st in wide.stats.values())
    assert 12 < needed <= 32
    assert sum(st.overflows for st in narrow.stats.values()) > 0
    assert torch.isfinite(out).all()
    assert "bits needed" in wide.to_table()


def test_engine_agrees_with_fake_quant_accumulators():
    m = _model()
    x = torch.randn(64, 1, 40)
    cfg = QuantConfig(bits_w=4, bits_a=4, accumulator_bits=10, accumulator_mode="wrap", cyclic=True)
    quantize_(m, cfg, example_inputs=x)
    with torch.no_grad():
        ref = m(x)
    out = IntegerEngine(m)(x)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.95


def test_engine_errors():
    with pytest.raises(ConfigError, match="needs a quantized model"):
        IntegerEngine(create_model("test_cnn1d"))
    m = create_model("test_cnn1d").eval()
    quantize_(m, QuantConfig(bits_w=4, bits_a=None), example_inputs=torch.randn(4, 1, 40))
    with pytest.raises(ConfigError, match="bits_a"):
        IntegerEngine(m)
    r = create_model("test_resnet").eval()
    x = torch.randn(4, 3, 16, 16)
    quantize_(r, QuantConfig(bits_w=8, bits_a=8), example_inputs=x)
    with pytest.raises(UnsupportedError, match="residual adds"):
        IntegerEngine(r)(x)
