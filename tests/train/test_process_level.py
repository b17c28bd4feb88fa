"""Tests that run real processes: a run killed with os._exit and resumed by the CLI, and torchrun with 2 ranks."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from effdl.core import load_checkpoint

FLAGS = [
    "train",
    "--model",
    "test_cnn1d",
    "--data",
    "mnist1d",
    "--epochs",
    "3",
    "--batch-size",
    "128",
    "--checkpoint-every-steps",
    "10",
    "--no-progress",
    "-q",
]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _effdl(*args, check=True, cwd=None):
    proc = subprocess.run(
        [sys.executable, "-m", "effdl", *args], capture_output=True, text=True, env=_env(), timeout=300, cwd=cwd
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"effdl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.slow  # subprocesses (torchrun, kill-and-resume): run with -m slow
def test_killed_run_resumed_by_cli_matches_uninterrupted_run(tmp_path):
    _effdl(*FLAGS, "--out", str(tmp_path / "full"))
    killer = textwrap.dedent(f"""
        import os, sys
        from effdl.train import Callback, TrainConfig, train_model

        class Kill(Callback):
            def on_batch_end(self, trainer, batch, loss):
                if trainer.step + 1 == 45:  # epoch 2 of 3 (32 steps each), after the step-40 checkpoint
                    os._exit(9)

        cfg = TrainConfig(epochs=3, batch_size=128, checkpoint_every_steps=10, progress=False)
        train_model("test_cnn1d", "mnist1d", cfg, out_dir={str(tmp_path / "killed")!r}, callbacks=[Kill()])
    """)
    proc = subprocess.run([sys.executable, "-c", killer], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 9, proc.stderr
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    # resumed from another working directory, with a relative --out: the run is the folder, not the cwd
    (tmp_path / "elsewhere").mkdir()
    _effdl(*FLAGS, "--out", "../killed", "--resume", cwd=tmp_path / "elsewhere")
    full, _ = load_checkpoint(tmp_path / "full" / "model.safetensors")
    resumed, _ = load_checkpoint(tmp_path / "killed" / "model.safetensors")
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)


@pytest.mark.slow  # subprocesses (torchrun, kill-and-resume): run with -m slow
def test_resume_with_other_settings_is_refused(tmp_path):
    _effdl(*FLAGS, "--out", str(tmp_path))
    proc = _effdl(*FLAGS, "--out", str(tmp_path), "--resume", "--lr", "0.5", check=False)
    assert proc.returncode == 2
    assert "config.lr=0.001 there, config.lr=0.5 here" in proc.stderr


@pytest.mark.slow  # subprocesses (torchrun, kill-and-resume): run with -m slow
def test_torchrun_two_processes_reach_the_single_process_band(tmp_path):
    common = ["train", "--model", "cnn1d", "--epochs", "20", "--no-progress", "-q"]
    _effdl(*common, "--out", str(tmp_path / "one"))
    _effdl(*common, "--nproc", "2", "--out", str(tmp_path / "two"))
    one = json.loads((tmp_path / "one" / "report.json").read_text())["summary"]["accuracy"]
    two = json.loads((tmp_path / "two" / "report.json").read_text())["summary"]["accuracy"]
    assert one >= 0.95 and two >= 0.95 and abs(one - two) <= 0.03, (one, two)


@pytest.mark.slow
def test_reference_cnn1d_with_defaults_reaches_97_percent(tmp_path):
    _effdl("train", "--model", "cnn1d", "--data", "mnist1d", "--no-progress", "-q", "--out", str(tmp_path))
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["accuracy"] >= 0.97
