import pytest
import torch

from effdl.core.errors import CheckpointError, ConfigError, UnsupportedError
from effdl.models import create_model
from effdl.prune import L1FilterPruneConfig, prune_
from effdl.quant import Int8Config, convert_int8, load_int8
from effdl.quant import int8 as int8_mod


def _calib(shape, n=4):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(16, *shape, generator=g) for _ in range(n)]


@pytest.mark.parametrize("runtime", ["torch-ao", "onnxruntime"])
@pytest.mark.parametrize("name", ["test_cnn1d", "test_resnet"])
def test_int8_runs_close_to_fp32_and_round_trips(tmp_path, runtime, name):
    model = create_model(name).eval()
    shape = model.effdl_spec["input_shape"]
    data = _calib(shape)
    q = convert_int8(model, Int8Config(runtime=runtime), example_inputs=data[0], data=data)
    assert q.runtime == runtime
    x = data[1]
    with torch.no_grad():
        ref, out = model(x), q(x)
    assert out.shape == ref.shape
    # int8 error is small relative to the output range (8-bit activations and weights)
    assert (out - ref).abs().max() < 0.1 * ref.abs().max() + 0.05
    path = q.save(tmp_path / "model")
    q2 = load_int8(path)
    assert torch.equal(q2(x), out)
    assert q.size_bytes() == path.stat().st_size


def test_int8_file_is_a_quarter_of_fp32():
    model = create_model("cnn2d").eval()
    data = _calib((1, 8, 8))
    q = convert_int8(model, Int8Config(runtime="torch-ao"), example_inputs=data[0], data=data)
    fp32 = sum(p.numel() * 4 for p in model.state_dict().values())
    assert q.size_bytes() < 0.3 * fp32


def test_auto_picks_a_runtime_by_timing():
    model = create_model("test_cnn1d").eval()
    data = _calib((1, 40))
    q = convert_int8(model, Int8Config(runtime="auto"), example_inputs=data[0], data=data, batch_size=4)
    assert set(q.selection) == {"fp32", "torch-ao", "onnxruntime"}
    assert q.runtime == min(("torch-ao", "onnxruntime"), key=q.selection.get)


def test_pruned_model_round_trips(tmp_path):
    model = create_model("test_cnn1d").eval()
    prune_(model, L1FilterPruneConfig(ratio=0.5), example_inputs=torch.zeros(2, 1, 40))
    data = _calib((1, 40))
    q = convert_int8(model, Int8Config(runtime="torch-ao"), example_inputs=data[0], data=data)
    q2 = load_int8(q.save(tmp_path / "m"))
    assert torch.equal(q2(data[0]), q(data[0]))


def test_unavailable_runtime_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(int8_mod, "_has_onnxruntime", lambda: False)
    model = create_model("test_cnn1d").eval()
    with pytest.raises(UnsupportedError, match="pip install 'effdl\\[onnx\\]'"):
        convert_int8(model, Int8Config(runtime="onnxruntime"), example_inputs=torch.zeros(2, 1, 40))
    monkeypatch.setattr(int8_mod, "_ao_engine", lambda: None)
    with pytest.raises(UnsupportedError, match="quantized engine"):
        convert_int8(model, Int8Config(runtime="torch-ao"), example_inputs=torch.zeros(2, 1, 40))
    with pytest.raises(UnsupportedError, match="no int8 runtime is available"):
        convert_int8(model, Int8Config(runtime="auto"), example_inputs=torch.zeros(2, 1, 40))


@pytest.mark.parametrize("runtime", ["torch-ao", "onnxruntime"])
def test_calibration_without_data_is_refused(runtime):
    model = create_model("test_cnn1d").eval()
    with pytest.raises(ConfigError, match="calibration got no data"):
        convert_int8(model, Int8Config(runtime=runtime), example_inputs=torch.zeros(2, 1, 40), data=[])


def test_bad_config_and_files(tmp_path):
    with pytest.raises(ConfigError, match="runtime must be one of"):
        Int8Config(runtime="tensorrt")
    with pytest.raises(ConfigError, match="calibration_batches"):
        Int8Config(calibration_batches=0)
    with pytest.raises(CheckpointError, match="no int8 model"):
        load_int8(tmp_path / "missing.safetensors")
    from effdl.models import save_model

    path = save_model(create_model("test_cnn1d"), tmp_path / "float.safetensors")
    with pytest.raises(CheckpointError, match="not an effdl int8 model"):
        load_int8(path)
