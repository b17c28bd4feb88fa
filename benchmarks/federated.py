"""Federated training where clients hold only the quantized model (FedAQT) against float FedAvg and QAT clients with
a float shadow copy, on MNIST-1D (generated offline): 10 clients, non-IID (Dirichlet alpha 0.5 over labels), every
client every round, 1 local epoch of plain SGD (batch 32, lr 0.05) per round, 40 rounds, seed 0.

Runs per model: ``fedavg (float)``; ``qat 8-bit`` (FedAvg of clients that train a float copy through 8-bit
fake-quantized weights); ``fedaqt 8-bit`` / ``fedaqt 4-bit`` (clients hold packed k-bit weights with per-channel
scales and write each SGD step back with stochastic rounding); ``fedaqt 4-bit nearest`` (the same with
round-to-nearest updates: the ablation). Models: ``cnn1d`` (23.4K parameters; a training step's activations dominate
its memory) and ``mlp`` 40-512-512-10 (288K parameters; the weights dominate).

Client memory is counted exactly: the state a client holds between steps (parameters, buffers, packed codes and
scales; no optimizer state for any method) plus the peak bytes of tensors alive during a training step (activations,
gradients, temporaries; ``effdl.measure.peak_allocated``). Bytes per round are the payload tensors each way per
client (codes, scales and the float biases/BatchNorm tensors included).

Run: .venv/bin/python benchmarks/federated.py   (about 3 minutes on 2 cores)
Writes benchmarks/results/federated.{md,json} and federated.png.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from common import write_results
from effdl.data import get_dataset
from effdl.federated import FederatedConfig, compare_methods, methods_table, plot_accuracy
from effdl.models import create_model

ROUNDS = 40
COMMON = {"clients": 10, "rounds": ROUNDS, "split": "dirichlet", "alpha": 0.5, "lr": 0.05, "batch_size": 32,
          "seed": 0}  # fmt: skip
RUNS = {
    "fedavg (float)": FederatedConfig(method="fedavg", **COMMON),
    "qat 8-bit": FederatedConfig(method="qat", bits=8, **COMMON),
    "fedaqt 8-bit": FederatedConfig(method="fedaqt", bits=8, **COMMON),
    "fedaqt 4-bit": FederatedConfig(method="fedaqt", bits=4, **COMMON),
    "fedaqt 4-bit nearest": FederatedConfig(method="fedaqt", bits=4, rounding="nearest", **COMMON),
}
MODELS = {"cnn1d": {}, "mlp 40-512-512-10": {"hidden": (512, 512)}}


def main() -> None:
    torch.set_num_threads(2)
    data = get_dataset("mnist1d")
    tables, records, all_results = [], [], {}
    for label, options in MODELS.items():
        name = label.split()[0]

        def make(name=name, options=options):
            torch.manual_seed(0)
            return create_model(name, input_shape=data.input_shape, num_classes=data.num_classes, **options)

        start = time.time()
        results = compare_methods(make, data, RUNS)
        print(f"{label}: {time.time() - start:.0f} s")
        table = methods_table(results)
        print(table)
        base = results["fedavg (float)"].history[-1]
        for run, result in results.items():
            h = result.history[-1]
            records.append({
                "model": label, "run": run, "accuracy": h["accuracy"],
                "best_accuracy": max(x["accuracy"] for x in result.history),
                "client_state_bytes": h["client_state_bytes"], "client_step_peak_bytes": h["client_step_peak_bytes"],
                "memory_vs_float": (h["client_state_bytes"] + h["client_step_peak_bytes"])
                / (base["client_state_bytes"] + base["client_step_peak_bytes"]),
                "state_vs_float": h["client_state_bytes"] / base["client_state_bytes"],
                "bytes_down": h["bytes_down"], "bytes_up": h["bytes_up"],
                "down_ratio": base["bytes_down"] / h["bytes_down"], "up_ratio": base["bytes_up"] / h["bytes_up"],
                "history": [x["accuracy"] for x in result.history],
            })  # fmt: skip
            all_results[f"{label}: {run}"] = result
        tables.append(f"### {label}\n\n{table}")
    plot_accuracy(all_results, Path(__file__).parent / "results" / "federated.png")
    notes = (__doc__ or "").splitlines()[2:18]
    print(write_results("federated", "Federated training with quantized clients (FedAQT) on MNIST-1D", notes,
                        "\n\n".join(tables) + "\n\n![accuracy per round](federated.png)", records))  # fmt: skip


if __name__ == "__main__":
    main()
