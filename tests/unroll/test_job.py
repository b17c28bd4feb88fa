import json

import jsonschema
import pytest

from effdl.core import report_schema
from effdl.core.errors import ConfigError
from effdl.unroll import SparseProblem, UnrollTrainConfig
from effdl.unroll.hyper import HyperTuneConfig
from effdl.unroll.job import LEARNED, eval_report, parse_methods, train_report

SMALL = SparseProblem(m=20, n=40)
TRAIN = UnrollTrainConfig(steps_per_stage=3, eval_every=3, val_size=32, batch_size=16, progress=False)
TUNE = HyperTuneConfig(samples=32, points=2, rounds=1, progress=False)


def test_train_then_eval(tmp_path):
    _report, comparison = train_report(["alista", "hyperlista", "lista-cp"], tmp_path, problem=SMALL, layers=3,
                                      train=TRAIN, tune=TUNE, test_samples=64)  # fmt: skip
    doc = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(doc, report_schema())
    assert [c["name"] for c in doc["details"]["comparison"]["curves"]] == [
        "ista", "fista", "alista", "hyperlista", "lista-cp"]  # fmt: skip
    assert doc["details"]["fit"]["hyperlista"]["kind"] == "tune" and doc["details"]["fit"]["alista"]["kind"] == "train"
    assert (tmp_path / "nmse.png").exists() and (tmp_path / "alista" / "model.safetensors").exists()

    report2, comparison2 = eval_report(tmp_path / "eval", runs=tmp_path, samples=64, reach=True, reach_max=300)
    names = [c.name for c in comparison2.curves]
    assert names[:2] == ["ista", "fista"] and set(names[2:]) == {"alista", "hyperlista", "lista-cp"}
    assert len(comparison2.curve("ista").nmse_db) == 3  # classical depth follows the solvers
    # same held-out problems: the trained solvers score the same as in the training report
    assert comparison2.curve("alista").nmse_db == comparison.curve("alista").nmse_db
    reach = report2.details["reach"]["results"]
    assert {r["target"] for r in reach} == {"alista-3", "hyperlista-3", "lista-cp-3"}
    assert (tmp_path / "eval" / "iterations.png").exists()
    jsonschema.validate(json.loads((tmp_path / "eval" / "report.json").read_text()), report_schema())


def test_resume_loads_finished_models(tmp_path):
    train_report(["alista"], tmp_path, problem=SMALL, layers=2, train=TRAIN, test_samples=16)
    stamp = (tmp_path / "alista" / "model.safetensors").stat().st_mtime_ns
    _report, _ = train_report(["alista"], tmp_path, problem=SMALL, layers=2, train=TRAIN, test_samples=16, resume=True)
    assert (tmp_path / "alista" / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="layers=2 there, layers=3 here"):  # the folder's run is another one
        train_report(["alista"], tmp_path, problem=SMALL, layers=3, train=TRAIN, test_samples=16, resume=True)
    with pytest.raises(ConfigError, match=r"train\.lr=.* there, train\.lr=0\.001 here"):
        train_report(["alista"], tmp_path, problem=SMALL, layers=2, train=TRAIN.replace(lr=1e-3), test_samples=16,
                     resume=True)  # fmt: skip


def test_methods_and_bad_input(tmp_path):
    assert parse_methods("all", LEARNED) == list(LEARNED)
    with pytest.raises(ConfigError, match="unknown method 'ista'"):
        parse_methods("ista", LEARNED)
    with pytest.raises(ConfigError, match="no method given"):
        parse_methods(" , ", LEARNED)
    with pytest.raises(ConfigError, match=r"no \*/model\.safetensors"):
        eval_report(None, runs=tmp_path)
    with pytest.raises(ConfigError, match="pass --checkpoint or --runs"):
        eval_report(None, problem=SMALL, reach=True, samples=8)
    _report, comparison = eval_report(None, problem=SMALL, layers=5, samples=8)
    assert [len(c.nmse_db) for c in comparison.curves] == [5, 5]
