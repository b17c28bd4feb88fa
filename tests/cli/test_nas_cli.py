import json

import jsonschema

from effdl.cli.main import main
from effdl.core import report_schema


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_nas_score(capsys):
    code, out, err = _run(capsys, "nas", "score", "--arch", "c8-16_k5-3_s1-2_r1", "--proxies", "zico,params")
    assert code == 0, err
    assert "zico" in out and "params" in out


def test_nas_eval_writes_correlations_and_plots(tmp_path, capsys):
    code, out, err = _run(capsys, "nas", "eval", "--limit", 12, "--proxies", "zico,params,synflow", "--bands", 2,
                          "--out", tmp_path, "--no-progress", "-q")  # fmt: skip
    assert code == 0, err
    doc = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(doc, report_schema())
    corr = doc["details"]["correlations"]
    assert set(corr) == {"zico", "params", "synflow"}
    assert all(-1 <= c["kendall_tau"] <= 1 and -1 <= c["spearman_rho"] <= 1 for c in corr.values())
    assert (tmp_path / "scatter.png").exists() and "Kendall tau" in out


def test_nas_search_under_a_mac_budget(tmp_path, capsys):
    code, out, err = _run(capsys, "nas", "search", "--budget-macs", 50000, "--samples", 8, "--proxy", "zico",
                          "--train-winner", "--epochs", 1, "--out", tmp_path, "--no-progress", "-q")  # fmt: skip
    assert code == 0, err
    doc = json.loads((tmp_path / "report.json").read_text())
    best = doc["details"]["best"]
    assert best[0]["macs"] <= 50000 and 0 <= best[0]["accuracy"] <= 1
    assert "winner" in out


def test_nas_bad_input(capsys):
    code, _, err = _run(capsys, "nas", "score", "--arch", "c8_k3_s1_r0", "--proxies", "zen")
    assert code == 2 and "valid proxy names" in err
    code, _, err = _run(capsys, "nas", "score", "--arch", "c8_k3_s1_r0", "--batches", 1, "--proxies", "zico")
    assert code == 2 and "2 mini-batches" in err
    code, _, err = _run(capsys, "nas", "score", "--arch", "c8_k3_s1_r0", "--batch-size", 1, "--proxies", "snip")
    assert code == 2 and "size 1" in err
