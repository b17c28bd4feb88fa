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

from effdl.analysis import Surface
from effdl.compress import Recipe
from effdl.data import get_dataset
from effdl.models import create_model, save_model
from effdl.prune import L1FilterPruneConfig
from effdl.scale import local_cluster
from effdl.train import TrainConfig, Trainer

pytestmark = pytest.mark.slow
ROOT = str(Path(__file__).resolve().parents[2])


def test_two_nodes_on_loopback_run_a_landscape_grid_end_to_end(tmp_path):
    # the drivers are separate processes, as on a real cluster; they inherit the cluster's authentication mode
    torch.manual_seed(0)
    ckpt = tmp_path / "m.safetensors"
    save_model(create_model("test_cnn1d", channels=(8, 8)), ckpt, meta={"dataset": "mnist1d"})
    args = ["--dims", "2", "--resolution", "5", "--max-examples", "200", "--workers", "2", "--no-progress", "-q"]
    local = subprocess.run([sys.executable, "-m", "effdl", "landscape", "--checkpoint", str(ckpt), "--out",
                            str(tmp_path / "local"), *args], capture_output=True, text=True, check=False)  # fmt: skip
    assert local.returncode == 0, local.stderr[-2000:]
    nodes = (
        "import sys; from effdl.scale import ExecutorConfig, run_units; from tests.scale import units; "
        "out = run_units(units.node_of, {str(i): i for i in range(6)}, ExecutorConfig(backend='ray', "
        f"address=sys.argv[1], runtime_env={{'env_vars': {{'PYTHONPATH': {ROOT!r}}}}}), shared=0.5); "
        "print('NODES', len({n for n, _ in out.results.values()}), len(out.failures))"
    )
    with local_cluster(2) as address:
        remote = subprocess.run([sys.executable, "-m", "effdl", "landscape", "--checkpoint", str(ckpt), "--out",
                                 str(tmp_path / "ray"), *args, "--backend", "ray", "--ray-address", address],
                                capture_output=True, text=True, check=False, timeout=600)  # fmt: skip
        where = subprocess.run([sys.executable, "-c", nodes, address], capture_output=True, text=True, check=False,
                               timeout=600, cwd=ROOT)  # fmt: skip
    assert remote.returncode == 0, remote.stderr[-2000:]
    a, b = Surface.load(tmp_path / "local").values, Surface.load(tmp_path / "ray").values
    assert set(a) == set(b) and all(np.array_equal(v, b[k]) for k, v in a.items())
    assert "NODES 2 0" in where.stdout, where.stderr[-2000:]  # both nodes ran units, none failed


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
