"""The reliability cases that need real processes (slow: run with ``bash scripts/test.sh -m slow``): two effdl
processes writing one folder at once, and ``kill -9`` of a parent that started workers (landscape's pool, the
torchrun launcher) leaving no process behind. docs/reliability.md lists the whole suite."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from effdl.models import create_model, save_model

pytestmark = pytest.mark.slow  # subprocesses, torchrun and kills


def _tagged_env(tag: str) -> dict[str, str]:
    """Children inherit the environment: the tag finds every process a run started, however deep."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "EFFDL_TEST_TAG": tag}


def _tagged(tag: str) -> list[int]:
    needle = f"EFFDL_TEST_TAG={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # ended meanwhile, or not ours to read
            continue
        if needle in environ.split(b"\0") and state != "Z":  # a zombie has ended; only its exit code is left
            found.append(int(entry.name))
    return found


def _wait_for(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _kill_and_check_nothing_is_left(proc: subprocess.Popen, tag: str, started) -> None:
    _wait_for(started, 120, "the workers to start")
    time.sleep(5)  # the workers are busy computing, not still starting up
    assert proc.poll() is None, "the run ended before it could be killed: give it more work"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    try:
        _wait_for(lambda: not _tagged(tag), 5, "the workers to end with their parent")
    finally:
        for pid in _tagged(tag):  # never leave a stray process to the next test
            os.kill(pid, signal.SIGKILL)


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    tag = uuid.uuid4().hex
    out = tmp_path / "run"
    args = [sys.executable, "-m", "effdl", "train", "--model", "cnn1d", "--epochs", "50", "--no-progress", "-q"]
    first = subprocess.Popen([*args, "--out", str(out)], env=_tagged_env(tag), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip
    try:
        _wait_for(lambda: (out / ".effdl" / "run.json").exists(), 120, "the first run to claim the folder")
        second = subprocess.run([*args, "--out", str(out)], env=_tagged_env(tag), capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert "is in use by another effdl run (`effdl train`, pid " in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first run goes on undisturbed
    finally:
        first.kill()
        first.wait(timeout=10)


def test_killing_landscape_ends_its_workers(tmp_path):
    checkpoint = save_model(create_model("cnn1d"), tmp_path / "m.safetensors", meta={"dataset": "mnist1d"})
    tag = uuid.uuid4().hex
    # units of many points on all splits: a worker is mid-unit for well over 5 s, so ending with the parent cannot
    # come from the closed task pipe alone
    cmd = [sys.executable, "-m", "effdl", "landscape", "--checkpoint", str(checkpoint), "--workers", "2",
           "--resolution", "61", "--splits", "train,test", "--no-progress", "-q",
           "--out", str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=_tagged_env(tag), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the parent, multiprocessing's resource tracker and 2 workers
    _kill_and_check_nothing_is_left(proc, tag, lambda: len(_tagged(tag)) >= 4)


def test_killing_the_torchrun_launcher_ends_torchrun_and_its_ranks(tmp_path):
    tag = uuid.uuid4().hex
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "effdl", "train", "--model", "cnn1d", "--epochs", "50", "--nproc", "2",
           "--no-progress", "-q", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=_tagged_env(tag), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # launcher + torchrun + 2 ranks; rank 0 claims the folder once it has started
    _kill_and_check_nothing_is_left(
        proc, tag, lambda: len(_tagged(tag)) >= 4 and (out / ".effdl" / "run.json").exists()
    )
    time.sleep(2)
    assert not (out / "model.safetensors").exists()  # nobody writes results after the kill


def test_the_folder_is_free_again_after_its_writer_was_killed(tmp_path):
    """The lock is the kernel's (flock): it ends with the process, so a killed run never blocks its --resume."""
    tag = uuid.uuid4().hex
    out = tmp_path / "run"
    args = [sys.executable, "-m", "effdl", "train", "--model", "test_mlp", "--epochs", "1", "--no-progress", "-q"]
    first = subprocess.Popen([*args, "--epochs", "50", "--out", str(out)], env=_tagged_env(tag),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _wait_for(lambda: (out / ".effdl" / "run.json").exists(), 120, "the run to claim the folder")
    first.kill()
    first.wait(timeout=10)
    again = subprocess.run([*args, "--out", str(out)], env=_tagged_env(tag), capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (out / "model.safetensors").is_file()
