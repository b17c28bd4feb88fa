"""A Ray cluster of several nodes on this machine (head and workers on 127.0.0.1): the multi-node case, simulated
for tests, benchmarks and trying a cluster setup before moving it to real machines."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from effdl.core.config import check_range
from effdl.core.errors import ConfigError

__all__ = ["local_cluster"]

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    exe = Path(sys.executable).with_name("ray")
    if exe.exists():
        return str(exe)
    found = shutil.which("ray")
    if found is None:
        raise ConfigError("the ray command is not installed; pip install 'effdl[ray]'")
    return found


@contextlib.contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: int = 1, *, timeout_s: float = 120.0) -> Iterator[str]:
    """Starts a Ray head and ``nodes - 1`` worker nodes on 127.0.0.1 with ``ray start`` (separate processes, as
    on separate machines), yields the address to join (``ExecutorConfig(backend="ray", address=...)``), and stops
    exactly these processes afterwards (other Ray instances on the machine are left alone). The nodes and the
    drivers that join them must agree on Ray's authentication: the cluster uses this process's
    ``RAY_AUTH_MODE`` (``token`` after a local ``ray.init()``, which sets it) or none (``disabled``), and sets
    it in this process's environment while it is up, so drivers started meanwhile inherit it.

    Example (starts Ray, so not a doctest)::

        with local_cluster(2) as address:
            run_units(fn, units, ExecutorConfig(backend="ray", address=address))
    """
    check_range("nodes", nodes, 1, hint="use nodes=2 (a head and one worker)")
    check_range("cpus_per_node", cpus_per_node, 1, hint="use cpus_per_node=1")
    ray = _ray_cli()
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="effdl-ray-")
    common = ["--node-ip-address=127.0.0.1", f"--num-cpus={cpus_per_node}", f"--temp-dir={temp}",
              "--disable-usage-stats"]  # fmt: skip
    groups: list[int] = []
    # one authentication mode for the nodes and every driver: the one this process already uses (a local
    # ray.init() sets RAY_AUTH_MODE=token here), else none; drivers started while the cluster is up inherit it
    mode = os.environ.get("RAY_AUTH_MODE") or "disabled"
    old_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = mode
    try:
        _start([ray, "start", "--head", f"--port={port}", "--include-dashboard=false", *common], timeout_s, groups)
        for _ in range(nodes - 1):
            _start([ray, "start", f"--address={address}", *common], timeout_s, groups)
        log.info("local Ray cluster of %d node(s) at %s", nodes, address)
        yield address
    finally:
        _stop(groups)
        shutil.rmtree(temp, ignore_errors=True)
        if old_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)


def _start(cmd: list[str], timeout_s: float, groups: list[int]) -> None:
    # a session of its own: every daemon `ray start` leaves behind stays in its process group, which _stop kills
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    groups.append(proc.pid)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise ConfigError(f"`{' '.join(cmd)}` did not finish within {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-5:])
        raise ConfigError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")


def _stop(groups: list[int]) -> None:
    """Stops the process groups of the cluster's ``ray start`` commands (Ray's daemons ignore SIGTERM at times, so
    SIGKILL follows after a grace period)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            with contextlib.suppress(OSError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + 5
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(_alive(g) for g in groups):
            time.sleep(0.2)


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False
    return True
