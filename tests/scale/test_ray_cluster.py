"""Ray across processes (slow): two nodes on 127.0.0.1, and a sweep whose driver is killed. Run:
.venv/bin/python -m pytest -m slow tests/scale"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from effdl.analysis import LandscapeConfig, loss_surface
from effdl.compress import Recipe
from effdl.data import get_dataset
from effdl.models import create_model, save_model
from effdl.prune import L1FilterPruneConfig
from effdl.scale import ExecutorConfig, local_cluster, run_units
from effdl.train import TrainConfig, Trainer
from tests.scale import units

pytestmark = pytest.mark.slow
ROOT = str(Path(__file__).resolve().parents[2])


def test_two_nodes_on_loopback_run_a_landscape_grid_end_to_end():
    import ray

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    data = {"train": TensorDataset(torch.randn(64, 6), torch.randint(0, 3, (64,)))}
    cfg = LandscapeConfig(dims=2, resolution=7, splits=("train",), ignore="none", workers=2, progress=False)
    local = loss_surface(net, data, cfg)
    assert not ray.is_initialized()
    with local_cluster(2) as address:
        remote = loss_surface(net, data, cfg.replace(backend="ray", address=address))
        where = run_units(units.node_of, {str(i): i for i in range(6)}, ExecutorConfig(backend="ray", address=address,
                      runtime_env={"env_vars": {"PYTHONPATH": ROOT}}), shared=0.5)  # fmt: skip
    for key, values in local.values.items():
        assert np.array_equal(values, remote.values[key]), key
    assert where.failures == [] and len({node for node, _ in where.results.values()}) == 2  # both nodes worked


def _sweep_cmd(tmp_path: Path) -> list[str]:
    torch.manual_seed(0)
    data = get_dataset("mnist1d")
    model = create_model("test_cnn1d", channels=(16, 16))
    Trainer(model, TrainConfig(epochs=1, lr=1e-2, batch_size=128, progress=False)).fit(data.train)
    ckpt = tmp_path / "model.safetensors"
    save_model(model, ckpt, meta={"dataset": "mnist1d"})
    recipe = Recipe([L1FilterPruneConfig(ratio=0.5)], name="p").save(tmp_path / "p.yaml")
    return [sys.executable, "-m", "effdl", "-v", "sweep", str(recipe), "--checkpoint", str(ckpt), "--set",
            "steps.0.ratio=0.2,0.4,0.6,0.8", "--out", str(tmp_path / "out"), "--repeats", "3", "--no-progress",
            "--backend", "ray", "--workers", "1"]  # fmt: skip


def test_a_sweep_continues_after_its_driver_is_killed_without_rerunning_finished_trials(tmp_path):
    cmd = _sweep_cmd(tmp_path)
    runs = tmp_path / "out" / "runs"
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(runs.glob("00-*/point.json")) and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.2)
        assert list(runs.glob("00-*/point.json")), "the first point did not finish"
        os.kill(driver.pid, signal.SIGKILL)  # the driver dies; Ray's processes of this machine go down with it
        driver.wait()
    finally:
        time.sleep(2)
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except OSError:
            pass
    finished = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/point.json")}
    assert 1 <= len(finished) < 4
    assert not (tmp_path / "out" / "sweep.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "continuing the Ray Tune experiment" in done.stderr
    for name, mtime in finished.items():  # finished trials were not run again
        assert (runs / name / "point.json").stat().st_mtime_ns == mtime
        assert f"sweep point {name.split('-', 1)[1].replace('_', ', ')}" not in done.stderr
    points = json.loads((tmp_path / "out" / "sweep.json").read_text())["points"]
    assert [p["settings"]["steps.0.ratio"] for p in points] == [0.2, 0.4, 0.6, 0.8]
