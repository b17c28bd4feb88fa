"""``effdl compress --target``: the search from the command line, its replayable recipe, and clear errors."""

import json

import pytest

from tests.helpers import assert_refused as _refused
from tests.helpers import run_cli as _run

pytest.importorskip("onnxruntime")

QUICK = ["--no-progress", "--repeats", "2", "--batch-size", "16"]
SEARCH = ["--max-steps", "2", "--search-epochs", "1", "--finetune-epochs", "1", "--final-tries", "1"]


@pytest.mark.slow  # ~7 s: a search, its final run and the replay
def test_the_search_runs_from_the_command_line_and_its_recipe_replays(trained, tmp_path, capsys):
    out = tmp_path / "t"
    code, text, _ = _run(capsys, "compress", "--target", "macs", "--tolerance", "50", "--runtime", "pytorch",
                         "--checkpoint", trained, "--out", out, *QUICK, *SEARCH)  # fmt: skip
    assert code == 0
    assert "| original |" in text and "faster" in text and "recipe:" in text
    saved = json.loads((out / "target.json").read_text())
    assert saved["final"]["macs"] < saved["baseline"]["macs"]
    code, _, _ = _run(capsys, "compress", out / "recipe.yaml", "--checkpoint", trained, "--out", tmp_path / "r",
                      *QUICK)  # fmt: skip
    assert code == 0
    replayed = json.loads((tmp_path / "r" / "report.json").read_text())
    assert replayed["after"]["macs"] == saved["final"]["macs"]
    assert replayed["after"]["accuracy"] == saved["final"]["accuracy"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "size", "--tolerance", "-2"], "tolerance must be in"),
        (["--target", "speed"], "objective must be one of"),
        (["--target", "size=fast"], "--target takes OBJECTIVE or OBJECTIVE=RATIO"),
        (["--target", "size=0.5"], "ratio must be in"),
        (["default", "--target", "size"], "give a recipe or --target"),
        ([], "give a recipe or --target"),
    ],
)
def test_bad_targets_are_refused_before_any_work(trained, tmp_path, capsys, argv, message):
    _refused(capsys, "compress", *argv, "--checkpoint", trained, "--out", tmp_path / "o", *QUICK, message=message)
    assert not (tmp_path / "o").exists()
