import json

import jsonschema
import pytest
import torch

from effdl.cli.main import main
from effdl.core import report_schema
from effdl.models import create_model, save_model


def _run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_models_and_datasets_listings(capsys):
    code, out, _ = _run(capsys, "models")
    assert code == 0 and "cnn1d" in out and "resnet20" in out and "vit" in out
    code, out, _ = _run(capsys, "datasets", "--json")
    assert code == 0 and {d["name"] for d in json.loads(out)} >= {"mnist1d", "digits", "cifar10"}


def test_train_writes_model_metrics_and_schema_valid_report(tmp_path, capsys):
    code, out, _ = _run(
        capsys,
        "train",
        "--model",
        "test_cnn1d",
        "--epochs",
        "2",
        "--no-progress",
        "--out",
        str(tmp_path),
        "--model-opt",
        "channels=[6, 6]",
        "-q",
    )
    assert code == 0, out
    assert "accuracy" in out and "features.0" in out  # report table and per-layer profile are printed
    report = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(report, report_schema())
    assert report["command"] == "train" and report["model"] == "test_cnn1d" and report["dataset"] == "mnist1d"
    s = report["summary"]
    assert s["params"] > 0 and s["macs"] > 0 and s["size_bytes"] > 0 and 0 <= s["accuracy"] <= 1
    assert s["latency_ms"] > 0 and s["batch_size"] == 1 and s["threads"] >= 1
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert report["config"]["epochs"] == 2

    code, out, _ = _run(
        capsys,
        "eval",
        "--checkpoint",
        str(tmp_path / "model.safetensors"),
        "--out",
        str(tmp_path / "eval"),
        "--batch-size",
        "8",
        "--repeats",
        "3",
    )
    assert code == 0 and "mnist1d test accuracy" in out
    ev = json.loads((tmp_path / "eval" / "report.json").read_text())
    jsonschema.validate(ev, report_schema())
    assert ev["summary"]["accuracy"] == pytest.approx(s["accuracy"]) and ev["summary"]["batch_size"] == 8


def test_profile_command(tmp_path, capsys):
    code, out, _ = _run(
        capsys,
        "profile",
        "--model",
        "test_resnet",
        "--batch-size",
        "4",
        "--repeats",
        "3",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
    )
    assert code == 0 and "layer1.0.conv1" in out and "at batch 4, 1 thread(s)" in out
    report = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(report, report_schema())
    assert report["summary"]["macs"] == 216224 and report["summary"]["threads"] == 1
    code, out, _ = _run(capsys, "profile", "--model", "cnn1d", "--json", "--repeats", "2")
    assert json.loads(out)["params"] == 23402


def test_unknown_names_give_exit_2_and_list_valid_ones(capsys):
    code, _, err = _run(capsys, "profile", "--model", "resnet21")
    assert code == 2 and "unknown model 'resnet21'" in err and "valid models:" in err
    code, _, err = _run(capsys, "train", "--model", "mlp", "--data", "imagenet", "--no-progress")
    assert code == 2 and "valid datasets: cifar10, digits, fashion-mnist, mnist, mnist1d" in err
    code, _, err = _run(capsys, "train", "--model", "mlp", "--lr", "-1", "--no-progress")
    assert code == 2 and "lr must be in (0.0, inf), got lr=-1.0" in err
    code, _, err = _run(capsys, "train", "--model", "mlp", "--data", "mnist", "--no-progress")
    assert code == 2 and "pass root=PATH (CLI: --data-root PATH)" in err
    code, _, err = _run(capsys, "train", "--model", "mlp", "--data-opt", "num_samples", "--no-progress")
    assert code == 2 and "--data-opt takes KEY=VALUE" in err


def test_data_options_reach_the_dataset(tmp_path, capsys):
    code, out, _ = _run(capsys, "train", "--model", "test_mlp", "--epochs", "1", "--no-progress", "-q",
                        "--data-opt", "num_samples=1000", "--out", str(tmp_path))  # fmt: skip
    assert code == 0
    assert "800 train / 200 test" in out


def test_checkpoint_errors_in_cli(tmp_path, capsys):
    pt = tmp_path / "model.pt"
    torch.save(create_model("test_mlp").state_dict(), pt)
    code, _, err = _run(capsys, "eval", "--checkpoint", str(pt), "--model", "test_mlp", "--data", "mnist1d")
    assert code == 2 and "--trust-pickle" in err
    code, out, _ = _run(
        capsys,
        "eval",
        "--checkpoint",
        str(pt),
        "--model",
        "test_mlp",
        "--data",
        "mnist1d",
        "--trust-pickle",
        "--repeats",
        "2",
    )
    assert code == 0 and "accuracy" in out
    good = tmp_path / "m.safetensors"
    save_model(create_model("test_mlp"), good)
    code, _, err = _run(capsys, "eval", "--checkpoint", str(good))
    assert code == 2 and "does not record its dataset; pass --data" in err
    good.write_bytes(good.read_bytes()[:-7])
    code, _, err = _run(capsys, "profile", "--checkpoint", str(good))
    assert code == 2 and "truncated" in err


def test_help_texts(capsys):
    for command in ("train", "eval", "profile"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        assert "--out" in capsys.readouterr().out
