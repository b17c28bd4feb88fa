import json

import jsonschema
import pytest

from effdl.cli.main import main
from effdl.core import report_schema
from effdl.data import get_dataset
from effdl.models import load_model
from effdl.quant import load_int8, quantized_layers
from effdl.train import evaluate


def _run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("runtime", ["torch-ao", "onnxruntime"])
def test_ptq_int8_prints_before_after_and_saves_a_reloadable_model(trained, tmp_path, capsys, runtime):
    out_dir = tmp_path / runtime
    code, out, _ = _run(
        capsys, "-q", "quantize", "--checkpoint", str(trained), "--method", "ptq-int8", "--runtime", runtime,
        "--repeats", "3", "--batch-size", "8", "--out", str(out_dir),
    )  # fmt: skip
    assert code == 0, out
    assert f"int8 runtime: {runtime}" in out and "before/after" in out
    report = json.loads((out_dir / "report.json").read_text())
    jsonschema.validate(report, report_schema())
    assert report["after"]["size_bytes"] < 0.35 * report["before"]["size_bytes"]
    assert abs(report["after"]["accuracy"] - report["before"]["accuracy"]) < 0.02
    q = load_int8(report["artifacts"]["final_model"])
    data = get_dataset("mnist1d")
    assert abs(evaluate(q, data.test)["accuracy"] - report["after"]["accuracy"]) < 1e-9


def test_qat_w4a4_with_lsq_saves_a_quantized_checkpoint(trained, tmp_path, capsys):
    out_dir = tmp_path / "qat"
    code, out, _ = _run(
        capsys, "-q", "quantize", "--checkpoint", str(trained), "--method", "qat", "--bits-w", "4", "--bits-a", "4",
        "--lsq", "--epochs", "1", "--no-progress", "--repeats", "3", "--out", str(out_dir),
    )  # fmt: skip
    assert code == 0, out
    report = json.loads((out_dir / "report.json").read_text())
    quant, finetune = report["config"]["recipe"]["steps"]
    assert quant["type"] == "QuantConfig" and quant["bits_w"] == 4 and finetune["train"]["epochs"] == 1
    assert len(report["details"]["stages"][-1]["details"]["history"]) == 1
    model = load_model(out_dir / "final" / "model.safetensors")
    assert {m.weight_quant.bits for m in quantized_layers(model).values()} == {4}
    data = get_dataset("mnist1d")
    assert abs(evaluate(model, data.test)["accuracy"] - report["after"]["accuracy"]) < 1e-9
    assert report["after"]["size_bytes"] < 0.2 * report["before"]["size_bytes"]


def test_ptq_with_mixed_precision(trained, tmp_path, capsys):
    out_dir = tmp_path / "mp"
    code, out, _ = _run(
        capsys, "-q", "quantize", "--checkpoint", str(trained), "--method", "ptq", "--mixed-precision", "4",
        "--repeats", "3", "--out", str(out_dir),
    )  # fmt: skip
    assert code == 0, out
    assert "mixed precision" in out and (out_dir / "mixed_precision.png").exists()
    report = json.loads((out_dir / "report.json").read_text())
    assert report["details"]["mixed_precision"]["average_bits"] <= 4.0


def test_mixed_precision_keeps_every_other_setting(trained, tmp_path, capsys):
    out_dir = tmp_path / "mpacc"
    code, out, _ = _run(
        capsys, "-q", "quantize", "--checkpoint", str(trained), "--method", "ptq", "--mixed-precision", "4",
        "--accumulator-bits", "16", "--bits-a", "6", "--observer", "percentile", "--ignore", "classifier",
        "--repeats", "2", "--out", str(out_dir),
    )  # fmt: skip
    assert code == 0, out
    (step,) = json.loads((out_dir / "report.json").read_text())["config"]["recipe"]["steps"]
    assert step["accumulator_bits"] == 16 and step["bits_a"] == 6 and step["observer"] == "percentile"
    assert step["ignore"] == ["classifier"] and step["per_channel"] is True and step["per_layer"]
    model = load_model(out_dir / "final" / "model.safetensors")
    assert all(m.accumulator is not None and m.accumulator.bits == 16 for m in quantized_layers(model).values())


def test_bad_bits_are_explained(trained, capsys):
    code, out, err = _run(capsys, "quantize", "--checkpoint", str(trained), "--method", "ptq", "--bits-w", "16")
    assert code != 0
    assert "bits_w must be an integer in [1, 8]" in out + err


def test_diagnose_prints_the_per_layer_report_and_saves_it(trained, tmp_path, capsys):
    code, out, _ = _run(capsys, "-q", "quantize", "--checkpoint", str(trained), "--diagnose", "--bits-w", "4",
                        "--method", "ptq", "--calibration-batches", "2", "--out", str(tmp_path))  # fmt: skip
    assert code == 0, out
    assert "SQNR alone dB" in out and "most sensitive:" in out
    assert (tmp_path / "diagnosis.png").stat().st_size > 0
    rows = json.loads((tmp_path / "diagnosis.json").read_text())["layers"]
    assert rows and all("sqnr_alone_db" in r for r in rows)


def test_ptq_int8_with_techniques_reports_the_lowering(trained, tmp_path, capsys):
    code, out, _ = _run(capsys, "-q", "quantize", "--checkpoint", str(trained), "--runtime", "onnxruntime",
                        "--equalize", "--bias-correction", "--layer-observer", "fc=entropy", "--repeats", "3",
                        "--calibration-batches", "2", "--out", str(tmp_path))  # fmt: skip
    assert code == 0, out
    assert "int8 runtime: onnxruntime" in out and "quantization steps apart" in out
    text = (tmp_path / "report.json").read_text()
    assert '"equalize": true' in text and '"bias_correction": true' in text and '"agreement"' in text


def test_tolerance_keeps_sensitive_layers_float(trained, tmp_path, capsys):
    code, out, _ = _run(capsys, "-q", "quantize", "--checkpoint", str(trained), "--method", "ptq", "--bits-w", "2",
                        "--bits-a", "4", "--tolerance", "100", "--calibration-batches", "2", "--repeats", "3",
                        "--out", str(tmp_path))  # fmt: skip
    assert code == 0, out
    assert "accuracy-controlled PTQ" in out and "layers float" in out
