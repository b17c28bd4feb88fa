import json

from effdl.cli.main import main


def test_federated_prints_the_comparison_and_writes_the_report(tmp_path, capsys):
    code = main(["-q", "federated", "--model", "mlp", "--clients", "3", "--rounds", "2", "--bits", "4",
                 "--method", "fedavg", "--method", "fedaqt", "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "fedavg (float)" in out and "fedaqt 4-bit" in out and "client memory" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["runs"]) == {"fedavg (float)", "fedaqt 4-bit"}
    assert len(report["runs"]["fedaqt 4-bit"]["history"]) == 2
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    again = main(["-q", "federated", "--model", "mlp", "--clients", "3", "--rounds", "3", "--bits", "4",
                  "--method", "fedaqt", "--out", str(tmp_path), "--resume"])  # fmt: skip
    assert again == 0  # two rounds were done: only the third runs
    history = json.loads((tmp_path / "report.json").read_text())["runs"]["fedaqt 4-bit"]["history"]
    assert [h["round"] for h in history] == [1, 2, 3]
    assert history[:2] == report["runs"]["fedaqt 4-bit"]["history"]  # the resumed run kept rounds 1-2 as they were


def test_federated_bad_bits_is_a_clear_error(tmp_path, capsys):
    code = main(["federated", "--bits", "3", "--method", "fedaqt", "--rounds", "1", "--out", str(tmp_path)])
    assert code != 0
    assert "bits must be one of 2, 4, 8" in capsys.readouterr().err
