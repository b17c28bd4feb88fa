"""The same client and server logic on Flower (``pip install 'effdl[fl]'``): a real gRPC server and clients in
separate processes, exchanging effdl's wire format (packed k-bit codes and scales for ``fedaqt``).

Flower 1.42 still ships the ``start_server`` / ``start_client`` entry points (deprecated in favour of SuperLink and
SuperNode processes driven by ``flwr run``, which need a Flower app project on disk); they run the same
``Strategy`` / ``NumPyClient`` code, so the logic here moves over unchanged. Every client trains each round (Flower
samples clients its own way; effdl's seeded sampling is kept by asking for all of them), and the server aggregates
the uploads in client-id order, so a run equals :func:`~effdl.federated.run_federated` for the same seed.

Processes (what a deployment runs; the test starts them on 127.0.0.1)::

    python -m effdl.federated.flower server --address 127.0.0.1:8080 --config run.json --out history.json
    python -m effdl.federated.flower client --address 127.0.0.1:8080 --config run.json --cid 0
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effdl.core.errors import ConfigError, EffdlError
from effdl.core.io import atomic_write_json
from effdl.federated.client import decode, encode, payload_bytes, train_client
from effdl.federated.config import FederatedConfig
from effdl.federated.server import _tensors, server_update
from effdl.federated.split import split_clients

__all__ = ["flower_client", "flower_strategy", "main"]

log = logging.getLogger(__name__)


def _require_flwr():
    try:
        import flwr
    except ImportError as exc:
        raise EffdlError("the Flower apps need flwr; install it with: pip install 'effdl[fl]'") from exc
    return flwr


def _to_arrays(payload: dict[str, torch.Tensor]) -> list[np.ndarray]:
    return [payload[k].detach().cpu().numpy() for k in sorted(payload)]


def _from_arrays(arrays: list[np.ndarray], keys: list[str]) -> dict[str, torch.Tensor]:
    if len(arrays) != len(keys):
        raise ConfigError(f"got {len(arrays)} tensors where the model's payload has {len(keys)}; server and client "
                          "must build the same model and config")  # fmt: skip
    return {k: torch.from_numpy(np.array(a)) for k, a in zip(sorted(keys), arrays, strict=True)}


def flower_client(architecture: nn.Module, data: Any, config: FederatedConfig, cid: int):
    """A Flower ``NumPyClient`` for client ``cid``: its share of ``data.train`` (the simulator's split), trained with
    :func:`~effdl.federated.train_client` on whatever the server sends."""
    flwr = _require_flwr()
    x, y = _tensors(data.train)
    parts = split_clients(y.numpy(), config.clients, split=config.split, alpha=config.alpha, seed=config.seed)
    if not 0 <= cid < config.clients:
        raise ConfigError(f"--cid must be in [0, {config.clients}), got {cid}")
    idx = torch.from_numpy(parts[cid])
    keys = sorted(encode(architecture, config))

    class Client(flwr.client.NumPyClient):
        def fit(self, parameters, fit_config):
            r = int(fit_config["round"])
            payload = _from_arrays(parameters, keys)
            res = train_client(architecture, payload, (x[idx], y[idx]), config,
                               seed=config.seed * 100_003 + r * 1009 + cid)  # fmt: skip
            metrics = {"cid": cid, "loss": res.loss, "state_bytes": res.state_bytes,
                       "step_peak_bytes": res.step_peak_bytes, "bytes_up": payload_bytes(res.payload)}  # fmt: skip
            return [res.payload[k].numpy() for k in sorted(res.payload)], res.examples, metrics

    return Client()


def flower_strategy(architecture: nn.Module, data: Any, config: FederatedConfig, history: list[dict[str, Any]]):
    """A Flower ``Strategy`` that keeps the float global model, sends it in ``config``'s wire format to every client,
    averages the decoded uploads in client-id order (FedAvg) and evaluates on ``data.test`` after each round,
    appending to ``history`` what :func:`~effdl.federated.run_federated` records."""
    flwr = _require_flwr()
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays

    from effdl.measure.evaluation import evaluate

    if config.clients_per_round not in (None, config.clients):
        raise ConfigError("the Flower apps train every client each round; leave clients_per_round unset")
    global_model = copy.deepcopy(architecture).eval()
    upload_keys = sorted(encode(architecture, config))  # an upload has the download's tensors (codes and scales too)

    class Strategy(flwr.server.strategy.Strategy):
        def initialize_parameters(self, client_manager):
            return ndarrays_to_parameters(_to_arrays(encode(global_model, config)))

        def configure_fit(self, server_round, parameters, client_manager):
            client_manager.wait_for(config.clients)
            payload = encode(global_model, config)
            self._down = payload_bytes(payload)
            self._received = decode(payload, architecture, config)
            ins = FitIns(ndarrays_to_parameters(_to_arrays(payload)), {"round": server_round - 1})
            return [(c, ins) for c in client_manager.all().values()]

        def aggregate_fit(self, server_round, results, failures):
            ordered = sorted(results, key=lambda r: int(r[1].metrics["cid"]))
            states, weights, rows = [], [], []
            for _, res in ordered:
                payload = _from_arrays(parameters_to_ndarrays(res.parameters), upload_keys)
                states.append(decode(payload, architecture, config))
                weights.append(res.num_examples)
                rows.append(res.metrics)
            if not states:
                raise ConfigError(f"round {server_round}: every client failed ({len(failures)} failures)")
            global_model.load_state_dict(server_update(global_model.state_dict(), self._received, states, weights))
            metrics = evaluate(global_model, data.test)
            history.append({
                "round": server_round,
                "accuracy": metrics["accuracy"],
                "test_loss": metrics["loss"] if math.isfinite(metrics["loss"]) else None,
                "loss": sum(m["loss"] * w for m, w in zip(rows, weights, strict=True)) / sum(weights),
                "clients": [int(m["cid"]) for m in rows],
                "failed": len(failures),
                "bytes_down": self._down,
                "bytes_up": sum(m["bytes_up"] for m in rows) / len(rows),
                "client_state_bytes": max(m["state_bytes"] for m in rows),
                "client_step_peak_bytes": max(m["step_peak_bytes"] for m in rows),
            })  # fmt: skip
            return ndarrays_to_parameters(_to_arrays(encode(global_model, config))), {}

        def configure_evaluate(self, server_round, parameters, client_manager):
            return []

        def aggregate_evaluate(self, server_round, results, failures):
            return None, {}

        def evaluate(self, server_round, parameters):
            return None

    return Strategy()


def _setup(path: str) -> tuple[nn.Module, Any, FederatedConfig]:
    from effdl.data import get_dataset
    from effdl.models import create_model

    spec = json.loads(Path(path).read_text())
    data = get_dataset(spec["data"], **spec.get("data_options", {}))
    torch.manual_seed(int(spec.get("model_seed", 0)))
    model = create_model(spec["model"], input_shape=data.input_shape, num_classes=data.num_classes,
                         **spec.get("model_options", {}))  # fmt: skip
    return model.eval(), data, FederatedConfig.from_dict(spec["config"])


def main(argv: list[str] | None = None) -> int:
    """``python -m effdl.federated.flower server|client``: the run is described by a JSON file (``model``,
    ``data``, optional ``model_options``/``data_options``/``model_seed``, and ``config``: a FederatedConfig dict)
    that server and clients share."""
    parser = argparse.ArgumentParser(prog="python -m effdl.federated.flower")
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--address", default="127.0.0.1:8080")
    parser.add_argument("--config", required=True, help="the run's JSON file")
    parser.add_argument("--cid", type=int, default=0, help="client id (client)")
    parser.add_argument("--out", default=None, help="history JSON (server)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    flwr = _require_flwr()
    model, data, config = _setup(args.config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # start_server/start_client warn that they are deprecated
        if args.role == "client":
            client = flower_client(model, data, config, args.cid).to_client()
            flwr.client.start_client(server_address=args.address, client=client, insecure=True)
            return 0
        history: list[dict[str, Any]] = []
        flwr.server.start_server(server_address=args.address, config=flwr.server.ServerConfig(num_rounds=config.rounds),
                                 strategy=flower_strategy(model, data, config, history))  # fmt: skip
    if args.out:
        atomic_write_json(Path(args.out), {"config": config.to_dict(), "history": history})
    return 0


if __name__ == "__main__":
    sys.exit(main())
