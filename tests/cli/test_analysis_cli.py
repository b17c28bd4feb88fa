import json

import jsonschema
import numpy as np

from effdl.analysis import Surface
from effdl.cli.main import main
from effdl.core import report_schema
from effdl.models import create_model, save_model


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_landscape_1d_writes_surface_plot_and_report(trained, tmp_path, capsys):
    out = tmp_path / "l"
    code, text, err = _run(capsys, "landscape", "--checkpoint", trained, "--dims", 1, "--resolution", 5,
                           "--max-examples", 200, "--out", out, "--no-progress", "-q")  # fmt: skip
    assert code == 0, err
    assert "train/loss" in text and "curvature" in text
    doc = json.loads((out / "report.json").read_text())
    jsonschema.validate(doc, report_schema())
    assert doc["command"] == "landscape" and doc["model"] == "cnn1d" and doc["dataset"] == "mnist1d"
    assert (out / "landscape_1d.png").exists()
    assert Surface.load(out).values["test/loss"].shape == (5,)


def test_landscape_trajectory_from_train_snapshots(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--model", "test_cnn1d", "--epochs", 3, "--snapshot-every", 1,
                        "--no-progress", "--out", run, "-q")  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in (run / "snapshots").glob("*.safetensors")) == [
        f"epoch_00{i}.safetensors" for i in range(4)
    ]
    out = tmp_path / "traj"
    code, text, err = _run(capsys, "landscape", "--checkpoint", run / "model.safetensors", "--trajectory",
                           run / "snapshots", "--resolution", 4, "--splits", "test", "--out", out,
                           "--no-progress", "-q")  # fmt: skip
    assert code == 0, err
    assert "PCA" in text and (out / "contour.png").exists()
    assert Surface.load(out).path.shape == (4, 2)


def test_landscape_bad_input_exits_2_with_a_message(trained, tmp_path, capsys):
    code, _, err = _run(capsys, "landscape", "--checkpoint", trained, "--resolution", 1, "--out", tmp_path)
    assert code == 2 and "resolution must be" in err
    other = tmp_path / "mlp.safetensors"
    save_model(create_model("test_mlp", input_shape=(1, 40), num_classes=10), other, meta={"dataset": "mnist1d"})
    code, _, err = _run(capsys, "landscape", "--checkpoint", trained, "--interpolate", other, "--out", tmp_path)
    assert code == 2 and "different architectures" in err


def test_landscape_interpolation(trained, tmp_path, capsys):
    other = tmp_path / "fresh.safetensors"
    save_model(create_model("cnn1d"), other, meta={"dataset": "mnist1d"})
    out = tmp_path / "i"
    code, _text, err = _run(capsys, "landscape", "--checkpoint", trained, "--interpolate", other, "--resolution", 5,
                           "--max-examples", 100, "--out", out, "--no-progress", "-q")  # fmt: skip
    assert code == 0, err
    s = Surface.load(out)
    assert s.kind == "interpolation" and np.allclose(s.axes[0], [-0.5, 0.0, 0.5, 1.0, 1.5])


def test_sharpness_prints_and_writes(trained, tmp_path, capsys):
    code, text, err = _run(capsys, "sharpness", "--checkpoint", trained, "--top-k", 2, "--iterations", 6,
                           "--trace-samples", 2, "--ascent-steps", 2, "--max-examples", 100, "--out", tmp_path,
                           "-q")  # fmt: skip
    assert code == 0, err
    assert "top Hessian eigenvalues" in text and "epsilon-sharpness" in text
    doc = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(doc, report_schema())
    assert len(doc["details"]["top_eigenvalues"]) == 2
