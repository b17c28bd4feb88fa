"""Several federated runs side by side on one dataset and model: accuracy per round, client memory and bytes per
round, as a table, a plot and JSON."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from effdl.core.io import atomic_write_json
from effdl.core.rundir import claim_run_dir, run_identity
from effdl.core.table import format_table, human_bytes
from effdl.data.base import dataset_fingerprint
from effdl.federated.config import FederatedConfig
from effdl.federated.server import FederatedResult, plot_accuracy, run_federated

__all__ = ["compare_methods", "methods_table"]

log = logging.getLogger(__name__)


def compare_methods(
    make_model: Any,
    data: Any,
    configs: dict[str, FederatedConfig],
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
) -> dict[str, FederatedResult]:
    """Runs each labelled config from the same initial model (``make_model()``, called once per run) on ``data``;
    with ``out_dir``, each run is resumable in ``out_dir/LABEL`` and ``report.json`` and ``accuracy.png`` are
    written there.

    Example:
        >>> from types import SimpleNamespace
        >>> import torch
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
        >>> data = SimpleNamespace(train=TensorDataset(x, y), test=TensorDataset(x, y))
        >>> runs = compare_methods(lambda: nn.Sequential(nn.Linear(4, 2)), data,
        ...                        {"float": FederatedConfig(method="fedavg", clients=2, rounds=1),
        ...                         "8-bit": FederatedConfig(method="fedaqt", clients=2, rounds=1)})
        >>> sorted(runs)
        ['8-bit', 'float']
    """
    if out_dir is None:
        return _compare(make_model, data, configs, None, resume)
    # each run's own folder checks its config on resume (rounds may grow, methods may be a subset)
    identity = run_identity(data=dataset_fingerprint(data.train, data.test))
    with claim_run_dir(out_dir, command="federated", identity=identity, resume=resume):
        return _compare(make_model, data, configs, out_dir, resume)


def _compare(make_model, data, configs, out_dir, resume) -> dict[str, FederatedResult]:
    results: dict[str, FederatedResult] = {}
    for label, config in configs.items():
        log.info("federated run %s: %s", label, config.describe())
        run_dir = None if out_dir is None else Path(out_dir) / _slug(label)
        results[label] = run_federated(make_model(), data, config, out_dir=run_dir, resume=resume)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "report.json", {"command": "federated",
                                                "runs": {k: v.to_dict() for k, v in results.items()}})  # fmt: skip
        try:
            plot_accuracy(results, out / "accuracy.png")
        except ImportError:
            log.warning("matplotlib is not installed: no accuracy.png (pip install 'effdl[plot]')")
    return results


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in label).strip("-") or "run"


def methods_table(results: dict[str, FederatedResult], baseline: str | None = None) -> str:
    """Final accuracy, client memory (state between steps + peak of a training step, exact) and bytes per client
    per round each way, with ratios to ``baseline`` (default: the first run).

    Example:
        >>> from types import SimpleNamespace
        >>> import torch
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
        >>> data = SimpleNamespace(train=TensorDataset(x, y), test=TensorDataset(x, y))
        >>> runs = compare_methods(lambda: nn.Sequential(nn.Linear(4, 2)), data,
        ...                        {"float": FederatedConfig(method="fedavg", clients=2, rounds=1)})
        >>> "client memory" in methods_table(runs)
        True
    """
    base = results[baseline or next(iter(results))].history[-1]
    base_memory = base["client_state_bytes"] + base["client_step_peak_bytes"]
    rows = []
    for label, result in results.items():
        h = result.history[-1]
        memory = h["client_state_bytes"] + h["client_step_peak_bytes"]
        failed = sum(len(x["failed"]) for x in result.history)
        rows.append([
            label, f"{100 * h['accuracy']:.2f}%", human_bytes(h["client_state_bytes"]),
            human_bytes(h["client_step_peak_bytes"]), f"{human_bytes(memory)} ({memory / base_memory:.0%})",
            f"{human_bytes(h['bytes_down'])} ({base['bytes_down'] / h['bytes_down']:.2f}x less)",
            f"{human_bytes(h['bytes_up'])} ({base['bytes_up'] / h['bytes_up']:.2f}x less)", failed,
        ])  # fmt: skip
    headers = ["run", "test acc", "client state", "step peak", "client memory", "down/client/round",
               "up/client/round", "failed clients"]  # fmt: skip
    return format_table(rows, headers, align="lrrrrrrr")
