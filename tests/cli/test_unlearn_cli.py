"""``effdl unlearn`` end to end with small settings (slow: it trains the judge and two inpainting models)."""

import json

import pytest

from effdl.cli.main import main


@pytest.mark.slow
def test_unlearn_prints_the_table_and_writes_report_and_pictures(tmp_path, capsys):
    code = main(["-q", "unlearn", "--forget", "3", "--epochs", "2", "--steps", "10", "--width", "16",
                 "--retain-batch-size", "32", "--schedule", "cosine", "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "noise-target (real retain)" in out and "of the time of retraining from scratch" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["details"]["forget_classes"] == [3]
    config = report["config"]
    assert config["width"] == 16 and config["unlearn"]["retain_batch_size"] == 32
    assert config["unlearn"]["schedule"] == "cosine"
    assert (tmp_path / "grids.png").is_file() and (tmp_path / "tradeoff.png").is_file()


def test_bad_forget_classes_exit_2(tmp_path, capsys):
    assert main(["unlearn", "--forget", "a,b", "--out", str(tmp_path)]) == 2
    assert "--forget takes digit classes" in capsys.readouterr().err
    assert main(["unlearn", "--forget", "0,1,2,3,4,5,6,7,8,9", "--out", str(tmp_path)]) == 2
    assert "nothing to retain" in capsys.readouterr().err
    assert main(["unlearn", "--width", "5", "--out", str(tmp_path)]) == 2
    assert "width must be an even number" in capsys.readouterr().err
