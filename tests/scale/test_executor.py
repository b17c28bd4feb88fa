import json
import sys

import pytest
import torch

from effdl.core.errors import CheckpointError, ConfigError
from effdl.data import get_dataset
from effdl.nas import GroundTruthConfig, sample_codes, train_architectures
from effdl.nas import ground_truth as gt
from effdl.scale import ExecutorConfig, UnitsFailedError, run_trials, run_units
from tests.scale import units

WORK = {"a": 2, "b": -1, "c": 3, "d": 4}


def _check_failures(out):
    assert out.results == {"a": 5, "c": 10, "d": 17}
    assert [(f.key, f.error) for f in out.failures] == [("b", "ValueError: negative unit -1")]
    assert "units.py" in out.failures[0].detail
    with pytest.raises(UnitsFailedError, match=r"1 points failed \(the rest finished\):\n  b: ValueError"):
        out.raise_failures("points", "fix it")


def test_a_failing_unit_is_reported_and_the_others_finish():
    _check_failures(run_units(units.square_or_fail, WORK, shared=1))


@pytest.mark.slow
def test_a_failing_unit_in_a_pool_is_reported_and_the_others_finish():
    _check_failures(run_units(units.square_or_fail, WORK, ExecutorConfig(workers=2), shared=1))


@pytest.mark.slow
def test_a_killed_pool_worker_is_replaced_and_its_unit_runs_again(tmp_path):
    seen = []
    out = run_units(units.die_once, {f"u{i}": i for i in range(5)}, ExecutorConfig(workers=2), shared=str(tmp_path),
                    on_result=lambda k, v: seen.append(k))  # fmt: skip
    assert out.results == {f"u{i}": i for i in range(5)} and out.failures == []
    assert sorted(seen) == [f"u{i}" for i in range(5)]  # each result arrived once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seen-0", "seen-2", "seen-4"]


@pytest.mark.slow
def test_a_unit_that_always_kills_its_worker_fails_after_the_retries():
    out = run_units(units.always_die, {"x": 0, "y": 1}, ExecutorConfig(workers=2, retries=1))
    assert out.results == {}
    assert [f.key for f in out.failures] == ["x", "y"]
    assert "died 2 times" in out.failures[0].error


def test_units_that_do_not_pickle_get_a_clear_error():
    with pytest.raises(ConfigError, match=r"do not pickle.*workers=1"):
        run_units(units.square_or_fail, {"a": 1, "b": 2}, ExecutorConfig(workers=2), shared=lambda: 0)


def test_the_unit_thread_count_applies_in_process_and_is_restored():
    before = torch.get_num_threads()
    out = run_units(_threads, {"a": 0}, ExecutorConfig(threads=1))
    assert out.results == {"a": 1} and torch.get_num_threads() == before


def _threads(shared, unit):
    return torch.get_num_threads()


def test_bad_executor_settings_are_refused():
    with pytest.raises(ConfigError, match="backend must be one of 'local', 'ray'"):
        ExecutorConfig(backend="dask")
    with pytest.raises(ConfigError, match=r"address= is a setting of the Ray backend; set backend='ray'"):
        ExecutorConfig(address="127.0.0.1:6379")
    with pytest.raises(ConfigError, match="workers must be in"):
        ExecutorConfig(workers=0)
    with pytest.raises(ConfigError, match="scheduler='asha' runs on Ray Tune"):
        run_trials(_trial, {"a": {}}, scheduler="asha", metric="m")
    with pytest.raises(ConfigError, match="pass metric="):
        run_trials(_trial, {"a": {}}, ExecutorConfig(backend="ray"), scheduler="asha")


def _trial(shared, params, report):
    report({"m": 1.0})
    return {"m": 1.0}


def test_the_ray_backend_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'effdl\[ray\]'"):
        run_units(units.square_or_fail, {"a": 1}, ExecutorConfig(backend="ray"))


@pytest.fixture(scope="module")
def mnist1d():
    return get_dataset("mnist1d")


def test_architecture_training_resumes_without_training_finished_ones(tmp_path, mnist1d, monkeypatch):
    codes = sample_codes("mnist1d_cnn", 3, seed=1)
    cfg = GroundTruthConfig(recipe={"epochs": 1, "batch_size": 256})
    first = train_architectures(codes[:2], cfg, out_dir=tmp_path, data=mnist1d, progress=False)
    trained = []
    real = gt._train_architecture
    monkeypatch.setattr(gt, "_train_architecture", lambda s, p, r: trained.append(p["arch"]) or real(s, p, r))
    second = train_architectures(codes, cfg, out_dir=tmp_path, data=mnist1d, progress=False)
    assert trained == [codes[2]]
    assert second.records[:2] == first.records and [r["arch"] for r in second.records] == codes
    # the same architecture trained again from scratch gets the same accuracies (seeded)
    again = train_architectures(codes[2:], cfg, data=mnist1d, progress=False)
    assert again.records[0]["test_accuracy"] == second.records[2]["test_accuracy"]
    with pytest.raises(ConfigError, match="another configuration"):
        train_architectures(codes, GroundTruthConfig(recipe={"epochs": 2}), out_dir=tmp_path, data=mnist1d)


def test_a_cut_record_line_is_dropped_and_a_corrupt_file_is_refused(tmp_path, mnist1d):
    codes = sample_codes("mnist1d_cnn", 1, seed=2)
    cfg = GroundTruthConfig(recipe={"epochs": 1, "batch_size": 256})
    train_architectures(codes, cfg, out_dir=tmp_path, data=mnist1d, progress=False)
    path = tmp_path / gt.PARTIAL
    path.write_text(path.read_text() + '{"arch": "c8')  # a crash in the middle of a write
    assert gt._load_partial(path, cfg)[codes[0]]["arch"] == codes[0]
    assert json.loads(path.read_text().splitlines()[-1])["arch"] == codes[0]
    path.write_text("not json\n{}\n")
    with pytest.raises(CheckpointError, match="unreadable"):
        train_architectures(codes, cfg, out_dir=tmp_path, data=mnist1d)


def test_bad_architecture_lists_are_refused(mnist1d):
    with pytest.raises(ConfigError, match="twice"):
        train_architectures(["c8_k3_s1_r0", "c8_k3_s1_r0"], data=mnist1d)
    with pytest.raises(ConfigError, match="cannot parse architecture"):
        train_architectures(["conv8"], data=mnist1d)
    with pytest.raises(ConfigError, match="TrainConfig does not know"):
        GroundTruthConfig(recipe={"epoch": 3})


def test_nas_train_cli_trains_resumes_and_lists_failures(tmp_path, capsys):
    from tests.helpers import assert_refused, run_cli

    out = tmp_path / "gt"
    code, text, _ = run_cli(capsys, "nas", "train", "--arch", "c4_k3_s2_r0", "--epochs", "1", "--out", out,
                            "--no-progress")  # fmt: skip
    assert code == 0 and "c4_k3_s2_r0" in text and "1 trained" in text
    record = json.loads((out / "architectures.json").read_text())["records"][0]
    code, text, _ = run_cli(capsys, "nas", "train", "--arch", "c4_k3_s2_r0", "c4_k5_s2_r0", "--epochs", "1",
                            "--out", out, "--no-progress")  # fmt: skip
    assert code == 0 and "2 trained" in text
    assert json.loads((out / "architectures.json").read_text())["records"][0] == record  # kept, not retrained
    assert_refused(capsys, "nas", "train", "--arch", "c4_k3_s2_r0", "--scheduler", "asha", "--out", tmp_path / "a",
                   message="runs on Ray Tune")  # fmt: skip
