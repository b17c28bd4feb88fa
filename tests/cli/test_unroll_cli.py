import json

import jsonschema

from effdl.cli.main import main
from effdl.core import report_schema


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_unroll_train_and_eval(tmp_path, capsys):
    code, out, err = _run(capsys, "unroll", "train", "--method", "alista,hyperlista", "--m", 20, "--n", 40,
                          "--layers", 3, "--steps", 3, "--tune-samples", 32, "--test-samples", 32, "--out", tmp_path,
                          "--no-progress", "-q")  # fmt: skip
    assert code == 0, err
    assert "NMSE@3 (dB)" in out and "hyperlista" in out and "fista" in out
    doc = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(doc, report_schema())
    assert doc["config"]["problem"]["m"] == 20

    code, out, err = _run(capsys, "unroll", "eval", "--checkpoint", tmp_path / "alista" / "model.safetensors",
                          "--method", "fista", "--samples", 32, "--reach", "--reach-max", 200,
                          "--out", tmp_path / "eval", "-q")  # fmt: skip
    assert code == 0, err
    assert "iterations to match" in out and "alista-3" in out
    assert (tmp_path / "eval" / "nmse.png").exists()


def test_unroll_eval_of_classical_algorithms_only(capsys):
    code, out, err = _run(capsys, "unroll", "eval", "--m", 20, "--n", 40, "--layers", 4, "--samples", 16, "-q")
    assert code == 0, err
    assert "ista" in out and "NMSE@4 (dB)" in out


def test_unroll_bad_input(tmp_path, capsys):
    code, _, err = _run(capsys, "unroll", "train", "--method", "lista-ss", "--out", tmp_path)
    assert code == 2 and "unknown method 'lista-ss'" in err
    code, _, err = _run(capsys, "unroll", "train", "--method", "alista", "--sparsity", 1.5, "--out", tmp_path)
    assert code == 2 and "sparsity must be in (0.0, 1.0)" in err
    code, _, err = _run(capsys, "unroll", "train", "--method", "alista", "--m", 50, "--n", 20, "--out", tmp_path)
    assert code == 2 and "n must be >= m" in err
    code, _, err = _run(capsys, "unroll", "eval", "--checkpoint", tmp_path / "missing.safetensors")
    assert code == 2 and "does not exist" in err
