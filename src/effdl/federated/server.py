"""The server side and the in-process simulator: rounds of client sampling, local training and FedAvg in float,
with the global model evaluated after each round; resumable by round; a client that fails is left out of its round
and reported."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effdl.core.checkpoint import load_checkpoint, save_checkpoint
from effdl.core.errors import CheckpointError, ConfigError
from effdl.core.plot import saved_figure
from effdl.core.table import format_table, human_bytes
from effdl.federated.client import decode, encode, payload_bytes, train_client
from effdl.federated.config import FederatedConfig
from effdl.federated.split import split_clients
from effdl.measure.evaluation import evaluate

__all__ = ["FederatedResult", "aggregate", "plot_accuracy", "run_federated", "sample_clients", "server_update"]

log = logging.getLogger(__name__)

_CHECKPOINT = "federated.safetensors"


def aggregate(states: list[dict[str, torch.Tensor]], weights: list[int]) -> dict[str, torch.Tensor]:
    """FedAvg: the average of float state dicts weighted by each client's example count (integer buffers such as
    BatchNorm's batch counter take the largest value).

    Example:
        >>> aggregate([{"w": torch.tensor([0.0])}, {"w": torch.tensor([3.0])}], [1, 2])["w"]
        tensor([2.])
    """
    total = float(sum(weights))
    out: dict[str, torch.Tensor] = {}
    for key in states[0]:
        tensors = [s[key] for s in states]
        if tensors[0].is_floating_point():
            out[key] = sum(t.double() * (w / total) for t, w in zip(tensors, weights, strict=True)).to(tensors[0].dtype)
        else:
            out[key] = torch.stack(tensors).max(dim=0).values
    return out


def server_update(
    old: dict[str, torch.Tensor],
    download: dict[str, torch.Tensor],
    uploads: list[dict[str, torch.Tensor]],
    weights: list[int],
) -> dict[str, torch.Tensor]:
    """The new float global model: the old one plus the weighted mean of the clients' changes, each measured
    against what the client received (``download``, the decoded payload). With a float payload this is FedAvg; with
    a k-bit payload it keeps the server's sub-grid remainder ``old - Q(old)``, which replacing the model by the mean
    upload would throw away every round.

    Example:
        >>> old, down = {"w": torch.tensor([0.26])}, {"w": torch.tensor([0.25])}
        >>> server_update(old, down, [{"w": torch.tensor([0.5])}, {"w": torch.tensor([0.25])}], [1, 1])["w"]
        tensor([0.3850])
    """
    mean = aggregate(uploads, weights)
    return {k: mean[k] + (old[k] - download[k]) if mean[k].is_floating_point() else mean[k] for k in mean}


def sample_clients(config: FederatedConfig, round_index: int) -> list[int]:
    """The clients of round ``round_index`` (seeded; without replacement).

    Example:
        >>> sample_clients(FederatedConfig(clients=10, clients_per_round=3, seed=1), 0)
        [3, 4, 7]
    """
    rng = np.random.default_rng([config.seed, round_index])
    return sorted(int(c) for c in rng.choice(config.clients, size=config.sampled, replace=False))


@dataclasses.dataclass
class FederatedResult:
    """Per-round history (accuracy, loss, clients, failures, bytes each way per client, client memory) and the final
    global model."""

    config: FederatedConfig
    history: list[dict[str, Any]]
    model: nn.Module

    @property
    def accuracy(self) -> float:
        """Test accuracy of the final global model."""
        return self.history[-1]["accuracy"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for reports)."""
        return {"config": self.config.to_dict(), "history": self.history}

    def to_table(self, every: int = 1) -> str:
        """One row per ``every`` rounds (and the last)."""
        rows = []
        for h in self.history:
            if h["round"] % every and h is not self.history[-1]:
                continue
            rows.append([h["round"], f"{100 * h['accuracy']:.2f}%", f"{h['loss']:.4f}", len(h["clients"]),
                         ", ".join(map(str, h["failed"])) or "-", human_bytes(h["bytes_down"]),
                         human_bytes(h["bytes_up"])])  # fmt: skip
        headers = ["round", "test acc", "client loss", "clients", "failed", "down/client", "up/client"]
        return format_table(rows, headers, align="rrrrlrr")


def _tensors(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(dataset, "tensors"):
        x, y = dataset.tensors[:2]
        return x, y
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(list(xs)), torch.as_tensor(ys)


def run_federated(
    model: nn.Module,
    data: Any,
    config: FederatedConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
) -> FederatedResult:
    """Simulates ``config`` in this process: the training set of ``data`` (an effdl dataset with ``train`` and
    ``test``) split over the clients, ``config.rounds`` rounds of sampling, local training and FedAvg, the global
    model evaluated on ``data.test`` after each round. ``model`` (the initial global model) is not changed.

    With ``out_dir``, the global model and the history are saved atomically after every round
    (``federated.safetensors``) and ``resume=True`` continues from the last finished round (``rounds`` may grow),
    refusing a checkpoint written for any other setting.

    Example:
        >>> from types import SimpleNamespace
        >>> from torch.utils.data import TensorDataset
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(64, 4, generator=g), torch.randint(0, 2, (64,), generator=g)
        >>> data = SimpleNamespace(train=TensorDataset(x, y), test=TensorDataset(x, y))
        >>> config = FederatedConfig(clients=4, rounds=2, method="fedaqt")
        >>> r = run_federated(nn.Sequential(nn.Linear(4, 2)), data, config)
        >>> len(r.history), r.history[-1]["bytes_up"]  # 8 one-byte codes + 2 scales + 2 float biases (float: 40)
        (2, 24.0)
    """
    x, y = _tensors(data.train)
    parts = split_clients(y.numpy(), config.clients, split=config.split, alpha=config.alpha, seed=config.seed)
    architecture = copy.deepcopy(model).eval()
    global_model = copy.deepcopy(model).eval()
    history: list[dict[str, Any]] = []
    start = 0
    path = Path(out_dir) / _CHECKPOINT if out_dir is not None else None
    if resume and path is not None and path.exists():
        state, meta = load_checkpoint(path)
        saved = meta.get("config", {})
        diff = sorted(k for k, v in config.to_dict().items() if k != "rounds" and saved.get(k) != v)
        if diff:  # only the number of rounds may change: more rounds continue the same run
            raise CheckpointError(
                f"{path} belongs to another federated run (differs in {diff}); resume with the same settings or "
                "start over without --resume"
            )
        global_model.load_state_dict(state)
        history, start = list(meta["history"]), int(meta["round"])
        log.info("resuming after round %d", start)
    for r in range(start, config.rounds):
        payload = encode(global_model, config)
        received = decode(payload, architecture, config)
        uploads, weights, failed, results = [], [], [], []
        for k in sample_clients(config, r):
            idx = torch.from_numpy(parts[k])
            try:
                seed = config.seed * 100_003 + r * 1009 + k
                res = train_client(architecture, payload, (x[idx], y[idx]), config, seed=seed)
            except Exception as exc:  # noqa: BLE001  (one client's fault does not stop the round)
                log.warning("round %d: client %d failed (%s: %s); the round goes on without it", r, k,
                            type(exc).__name__, exc)  # fmt: skip
                failed.append(k)
                continue
            uploads.append(decode(res.payload, architecture, config))
            weights.append(res.examples)
            results.append(res)
        if not uploads:
            raise ConfigError(f"round {r}: every sampled client failed ({failed}); see the warnings above")
        global_model.load_state_dict(server_update(global_model.state_dict(), received, uploads, weights))
        metrics = evaluate(global_model, data.test)
        history.append({
            "round": r + 1,
            "accuracy": metrics["accuracy"],
            "test_loss": metrics["loss"] if math.isfinite(metrics["loss"]) else None,
            "loss": sum(res.loss * res.examples for res in results) / sum(weights),
            "clients": [k for k in sample_clients(config, r) if k not in failed],
            "failed": failed,
            "bytes_down": payload_bytes(payload),
            "bytes_up": sum(payload_bytes(res.payload) for res in results) / len(results),
            "client_state_bytes": max(res.state_bytes for res in results),
            "client_step_peak_bytes": max(res.step_peak_bytes for res in results),
        })  # fmt: skip
        log.info("round %d: accuracy %.4f", r + 1, metrics["accuracy"])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            state = {k: v.contiguous() for k, v in global_model.state_dict().items()}
            save_checkpoint(path, state, {"config": config.to_dict(), "round": r + 1, "history": history})
    return FederatedResult(config, history, global_model)


def plot_accuracy(results: dict[str, FederatedResult], path: str | os.PathLike) -> Path:
    """Saves test accuracy per round of several runs (needs matplotlib)."""
    with saved_figure(path) as (_, ax):
        for label, res in results.items():
            ax.plot([h["round"] for h in res.history], [100 * h["accuracy"] for h in res.history], label=label)
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Federated training: global model after each round")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return Path(path)
