"""The Flower apps: a real Flower server and two clients as separate processes on 127.0.0.1, checked against the
in-process simulator (slow: three Python processes start)."""

import json
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("flwr", reason="the Flower apps need the fl extra (pip install 'effdl[fl]')")

from effdl.federated import run_federated
from effdl.federated.flower import _setup


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fedaqt", "fedavg"])
def test_flower_server_and_clients_on_loopback_equal_the_simulator(tmp_path, method):
    spec = {"model": "mlp", "data": "mnist1d", "model_seed": 0,
            "config": {"type": "FederatedConfig", "method": method, "bits": 4, "clients": 2, "rounds": 3,
                       "split": "dirichlet", "alpha": 1.0}}  # fmt: skip
    run = tmp_path / "run.json"
    run.write_text(json.dumps(spec))
    address = f"127.0.0.1:{free_port()}"
    base = [sys.executable, "-m", "effdl.federated.flower"]
    procs = [subprocess.Popen([*base, "server", "--address", address, "--config", str(run),
                               "--out", str(tmp_path / "history.json")], stderr=subprocess.PIPE)]  # fmt: skip
    try:
        time.sleep(2)
        procs += [subprocess.Popen([*base, "client", "--address", address, "--config", str(run), "--cid", str(k)],
                                   stderr=subprocess.PIPE) for k in range(2)]  # fmt: skip
        assert procs[0].wait(timeout=180) == 0, procs[0].stderr.read().decode()[-2000:]
        for p in procs[1:]:
            p.wait(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    flower = json.loads((tmp_path / "history.json").read_text())["history"]
    model, data, config = _setup(str(run))
    simulated = run_federated(model, data, config).history
    assert [h["accuracy"] for h in flower] == [h["accuracy"] for h in simulated]  # same seeds, same order: equal
    assert [h["loss"] for h in flower] == [h["loss"] for h in simulated]
    assert flower[-1]["bytes_up"] == simulated[-1]["bytes_up"]
