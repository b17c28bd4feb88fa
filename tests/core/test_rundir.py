"""Output-folder ownership (effdl.core.rundir), checkpoint checksums and bounds on untrusted sizes."""

import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc

import pytest
import torch

from effdl.core import load_checkpoint, save_checkpoint
from effdl.core.errors import CheckpointError, ConfigError
from effdl.core.io import atomic_write_json, atomic_write_text, load_yaml
from effdl.core.rundir import RunDirError, claim_run_dir, run_identity
from effdl.models import create_model, load_model, save_model


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    holder = textwrap.dedent(f"""
        import sys, time
        from effdl.core.rundir import claim_run_dir
        with claim_run_dir({str(tmp_path)!r}, command="train"):
            print("held", flush=True)
            time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=rf"in use by another effdl run \(`effdl train`, pid {proc.pid}"):
            with claim_run_dir(tmp_path, command="train"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with claim_run_dir(tmp_path, command="train"):  # the OS dropped the dead holder's lock
        pass


def test_starting_over_deletes_only_effdls_files(tmp_path):
    with claim_run_dir(tmp_path, command="compress", identity=run_identity(recipe="a")) as run:
        atomic_write_json(tmp_path / "final" / "report.json", {"a": 1})
        atomic_write_text(tmp_path / "steps" / "01" / "m.txt", "x")
    assert run.files == ["final/report.json", "steps/01/m.txt"]
    (tmp_path / "final" / "thesis.tex").write_text("my own work")
    (tmp_path / "notes.txt").write_text("mine too")
    with claim_run_dir(tmp_path, command="compress", identity=run_identity(recipe="b"), restart=True) as run:
        assert run.files == [] and not run.resumed
    assert (tmp_path / "final" / "thesis.tex").read_text() == "my own work"
    assert (tmp_path / "notes.txt").read_text() == "mine too"
    assert not (tmp_path / "final" / "report.json").exists() and not (tmp_path / "steps").exists()


def test_restart_refuses_a_folder_effdl_does_not_own(tmp_path):
    (tmp_path / "thesis.tex").write_text("my own work")
    with pytest.raises(RunDirError, match="was not written by effdl"):
        with claim_run_dir(tmp_path, command="compress", restart=True):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]  # not even the marker folder is left


def test_another_command_is_refused_and_a_file_out(tmp_path):
    with claim_run_dir(tmp_path, command="train"):
        pass
    with pytest.raises(RunDirError, match="holds the results of `effdl train`"):
        with claim_run_dir(tmp_path, command="landscape"):
            pass
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="is a file"):
        with claim_run_dir(tmp_path / "file", command="train"):
            pass


def test_resume_refuses_another_identity_naming_the_field(tmp_path, monkeypatch):
    with claim_run_dir(tmp_path, command="train", identity=run_identity(data="aaa", config={"lr": 0.1})):
        pass
    with pytest.raises(RunDirError, match=r"config\.lr=0\.1 there, config\.lr=0\.2 here"):
        with claim_run_dir(tmp_path, command="train", identity=run_identity(data="aaa", config={"lr": 0.2}),
                           resume=True):  # fmt: skip
            pass
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 1)
    with pytest.raises(RunDirError, match=rf"threads={threads} there.*OMP_NUM_THREADS={threads}"):
        with claim_run_dir(tmp_path, command="train", identity=run_identity(data="aaa", config={"lr": 0.1}),
                           resume=True):  # fmt: skip
            pass


def test_a_new_run_drops_stale_files_and_temporaries_of_the_earlier_one(tmp_path):
    with claim_run_dir(tmp_path, command="train"):
        atomic_write_text(tmp_path / "snapshots" / "epoch-1.safetensors", "old")
    stale_tmp = tmp_path / ".model.safetensors.abcd1234.tmp"
    stale_tmp.write_text("half a write")
    with claim_run_dir(tmp_path, command="train", identity=run_identity(seed=2)):
        assert not (tmp_path / "snapshots").exists()
        assert not stale_tmp.exists()


def test_corrupt_marker_is_a_clear_error(tmp_path):
    with claim_run_dir(tmp_path, command="train"):
        pass
    (tmp_path / ".effdl" / "run.json").write_text("{not json")
    with pytest.raises(RunDirError, match="is corrupt"):
        with claim_run_dir(tmp_path, command="train", resume=True):
            pass


def test_flipped_body_bytes_are_detected(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", {"w": torch.randn(64, 64)}, {"note": 1})
    raw = bytearray(path.read_bytes())
    for i in range(32):
        raw[-1 - 7 * i] ^= 0xFF  # 32 bytes in the tensor body
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_checkpoint(path)


def _bounded(fn):
    """Runs ``fn``, expecting an error; returns (error, seconds, peak MB of Python allocations)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(Exception) as info:
            fn()
        return info.value, time.perf_counter() - started, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_oversized_model_spec_is_refused_quickly(tmp_path):
    path = save_model(create_model("mlp", hidden=(8,)), tmp_path / "m.safetensors")
    tensors, meta = load_checkpoint(path)
    meta["model"]["kwargs"]["hidden"] = [60000, 60000]  # ~3.6e9 weights from a tiny file
    save_checkpoint(path, tensors, meta)
    err, seconds, peak = _bounded(lambda: load_model(path))
    assert isinstance(err, CheckpointError) and "refused before building" in str(err)
    assert seconds < 1 and peak < 200, (seconds, peak)
    meta["model"]["kwargs"]["hidden"] = [10**8]
    save_checkpoint(path, tensors, meta)
    with pytest.raises(CheckpointError, match="integer 100000000"):
        load_model(path)
    meta["model"] = {"kwargs": []}
    save_checkpoint(path, tensors, meta)
    with pytest.raises(CheckpointError, match="malformed model spec"):
        load_model(path)


def test_solver_checkpoint_with_absurd_depth_is_refused(tmp_path):
    from effdl.unroll import SparseProblem
    from effdl.unroll.checkpoint import build_solver, load_solver, save_solver
    from effdl.unroll.problem import Problem

    prob = Problem(SparseProblem(m=4, n=8))
    path = save_solver(build_solver("lista", prob.A, 2), tmp_path / "s.safetensors", problem=prob)
    tensors, meta = load_checkpoint(path)
    meta["layers"] = 10**7
    save_checkpoint(path, tensors, meta)
    err, seconds, peak = _bounded(lambda: load_solver(path))
    assert isinstance(err, CheckpointError) and "1 to 4096 layers" in str(err)
    assert seconds < 1 and peak < 200


def test_alias_bomb_recipe_is_refused_quickly():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)
    )
    err, seconds, peak = _bounded(lambda: load_yaml(bomb, what="recipe"))
    assert isinstance(err, ConfigError) and "alias" in str(err)
    assert seconds < 1 and peak < 200


def test_gzip_bomb_idx_is_refused_without_inflating(tmp_path):
    import gzip
    import struct

    from effdl.data.mnist import read_idx

    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">HBBIII", 0, 8, 3, 10, 28, 28))  # declares 7,840 bytes ...
        for _ in range(64):
            fh.write(bytes(1 << 20))  # ... then inflates to 64 MB
    err, seconds, peak = _bounded(lambda: read_idx(path))
    assert "does not match its header" in str(err)
    assert seconds < 1 and peak < 20


def test_metrics_csv_is_not_written_through_a_symlink(tmp_path):
    from effdl.train import TrainConfig, train_model

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    os.symlink(victim, out / "metrics.csv")
    train_model("test_mlp", "mnist1d", TrainConfig(epochs=1, progress=False), out_dir=out)
    assert victim.read_text() == "precious"
    assert not (out / "metrics.csv").is_symlink() and "epoch" in (out / "metrics.csv").read_text()
    assert json.loads((out / "report.json").read_text())["command"] == "train"
