"""The Ray backend against the local one (slow: starts Ray). Run: .venv/bin/python -m pytest -m slow tests/scale"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from effdl.analysis import LandscapeConfig, loss_surface
from effdl.compress import Recipe, sweep
from effdl.data import get_dataset
from effdl.measure import MeasureConfig
from effdl.models import create_model
from effdl.nas import GroundTruthConfig, sample_codes, train_architectures
from effdl.prune import L1FilterPruneConfig, sensitivity_analysis
from effdl.scale import ExecutorConfig, run_trials, run_units
from effdl.train import TrainConfig, Trainer
from tests.scale import units

pytestmark = pytest.mark.slow
ROOT = str(Path(__file__).resolve().parents[2])
RAY = ExecutorConfig(backend="ray", workers=2)


@pytest.fixture(scope="module", autouse=True)
def ray_here():
    """One local Ray instance for the module (the backend joins a running one); workers import the tests too."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": ROOT}})  # fmt: skip
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def mnist1d():
    return get_dataset("mnist1d")


def test_a_failing_unit_is_reported_and_a_killed_worker_loses_nothing(tmp_path):
    out = run_units(units.square_or_fail, {"a": 2, "b": -1, "c": 3}, RAY, shared=1)
    assert out.results == {"a": 5, "c": 10}
    assert [(f.key, f.error) for f in out.failures] == [("b", "ValueError: negative unit -1")]
    killed = run_units(units.die_once, {f"u{i}": i for i in range(5)}, RAY, shared=str(tmp_path))
    assert killed.results == {f"u{i}": i for i in range(5)} and killed.failures == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seen-0", "seen-2", "seen-4"]  # three workers died
    gone = run_units(units.always_die, {"x": 0}, RAY.replace(retries=1))
    assert gone.results == {} and "WorkerCrashedError" in gone.failures[0].error


def test_the_landscape_grid_is_identical_on_both_backends(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    data = {"train": TensorDataset(torch.randn(64, 6), torch.randint(0, 3, (64,)))}
    cfg = LandscapeConfig(dims=2, resolution=5, splits=("train",), ignore="none", workers=2, progress=False)
    local = loss_surface(net, data, cfg)
    remote = loss_surface(net, data, cfg.replace(backend="ray"), out_dir=tmp_path)
    for key, values in local.values.items():
        assert np.array_equal(values, remote.values[key]), key
    assert not (tmp_path / "surface.partial.npz").exists()


def test_a_nas_ground_truth_subset_is_identical_on_both_backends(mnist1d):
    codes = sample_codes("mnist1d_cnn", 3, seed=3)
    cfg = GroundTruthConfig(recipe={"epochs": 1, "batch_size": 256})
    local = train_architectures(codes, cfg, executor=ExecutorConfig(workers=2), data=mnist1d, progress=False)
    remote = train_architectures(codes, cfg, executor=RAY, data=mnist1d, progress=False)

    def figures(out):
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in out.records]

    assert figures(local) == figures(remote) and len(figures(local)) == 3


def test_a_sweep_is_identical_on_both_backends(mnist1d, tmp_path):
    torch.manual_seed(0)
    model = create_model("test_cnn1d", channels=(16, 16))
    Trainer(model, TrainConfig(epochs=1, lr=1e-2, batch_size=128, progress=False)).fit(mnist1d.train)
    recipe = Recipe([L1FilterPruneConfig(ratio=0.5)], name="p")
    grid = {"steps.0.ratio": [0.25, 0.5, 0.75]}
    fast = MeasureConfig(batch_size=32, repeats=3)
    runs = {}
    for name, executor in {"local": ExecutorConfig(threads=1), "ray": RAY}.items():
        points = sweep(model.eval(), mnist1d, recipe, grid, out_dir=tmp_path / name, measure=fast,
                       executor=executor, progress=False)  # fmt: skip
        runs[name] = [(p.name, p.accuracy, p.size_bytes, p.baseline_accuracy, p.baseline_size_bytes) for p in points]
    assert runs["local"] == runs["ray"]
    assert [r[0] for r in runs["ray"]] == ["ratio=0.25", "ratio=0.5", "ratio=0.75"]
    assert (tmp_path / "ray" / "sweep.md").exists() and (tmp_path / "ray" / "tune" / "experiment").is_dir()


def test_asha_stops_weak_trials_and_lets_the_best_finish():
    trials = {f"q{q}": {"q": q} for q in range(8, 0, -1)}  # the strong first: the weak ones meet a bar
    out = run_trials(units.climb, trials, RAY, shared=4, scheduler="asha", metric="score", max_steps=4)
    assert out.failures == [] and set(out.results) == set(trials)
    assert out.results["q8"] == {"score": 32, "q": 8}  # the best is never below the cut
    stopped = [k for k, r in out.results.items() if r.get("stopped_early")]
    assert stopped and all(out.results[k]["score"] < 32 for k in stopped)


def test_a_sensitivity_analysis_is_identical_on_both_backends(mnist1d):
    torch.manual_seed(0)
    model = create_model("test_cnn1d", channels=(16, 16))
    Trainer(model, TrainConfig(epochs=1, lr=1e-2, batch_size=128, progress=False)).fit(mnist1d.train)
    x = mnist1d.example_inputs(2)
    here = sensitivity_analysis(model.eval(), mnist1d.test, x, ratios=(0.25, 0.5), executor=ExecutorConfig(threads=1))
    remote = sensitivity_analysis(model, mnist1d.test, x, ratios=(0.25, 0.5), executor=RAY)
    assert here.to_dict() == remote.to_dict() and len(here.curves) >= 2


def test_the_landscape_command_runs_on_ray_with_the_same_surface(mnist1d, tmp_path, capsys):
    from effdl.analysis import Surface
    from effdl.models import save_model
    from tests.helpers import run_cli

    torch.manual_seed(0)
    ckpt = tmp_path / "m.safetensors"
    save_model(create_model("test_cnn1d", channels=(8, 8)), ckpt, meta={"dataset": "mnist1d"})
    surfaces = []
    for name, flags in {"local": ["--workers", "2"], "ray": ["--workers", "2", "--backend", "ray"]}.items():
        args = ["--dims", 1, "--resolution", 5, "--max-examples", 200, "--no-progress", "-q", *flags]
        code, _, err = run_cli(capsys, "landscape", "--checkpoint", ckpt, "--out", tmp_path / name, *args)
        assert code == 0, err
        surfaces.append(Surface.load(tmp_path / name).values)
    assert all(np.array_equal(v, surfaces[1][k]) for k, v in surfaces[0].items())
