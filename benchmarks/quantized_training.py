"""Training quantized nets (Li et al., NeurIPS 2017): BinaryConnect (full-precision shadow weights) against
stochastic rounding and deterministic rounding of the weights themselves (no shadow weights), at 1 to 4 bits, from
scratch on MNIST-1D. Same fixed weight grid per layer for all three, Adam, the model's recipe otherwise.

Run: .venv/bin/python benchmarks/quantized_training.py   (about 4 minutes)
Writes benchmarks/results/quantized_training.{md,json} and quantized_training.png.
"""

from __future__ import annotations

import statistics

import torch

from common import RESULTS, write_results
from effdl.core.table import format_table
from effdl.data import get_dataset
from effdl.models import create_model
from effdl.quant import TRAINING_METHODS, QuantizedWeightTraining
from effdl.train import Trainer, default_train_config, evaluate

MODEL = "cnn1d"
BITS = (1, 2, 3, 4)
SEEDS = (0, 1)
EPOCHS = 20
LR = 1e-3


def run(method: str, bits: int, seed: int, data, cfg) -> float:
    torch.manual_seed(seed)
    model = create_model(MODEL)
    Trainer(model, cfg.replace(seed=seed), callbacks=[QuantizedWeightTraining(method, bits=bits, seed=seed)]).fit(
        data.train
    )
    return evaluate(model, data.test)["accuracy"]


def main() -> None:
    data = get_dataset("mnist1d")
    cfg = default_train_config(MODEL, progress=False).replace(epochs=EPOCHS, optimizer="adam", lr=LR, weight_decay=0.0)
    results = {m: {b: [run(m, b, s, data, cfg) for s in SEEDS] for b in BITS} for m in TRAINING_METHODS}
    fp32 = []
    for s in SEEDS:
        torch.manual_seed(s)
        model = create_model(MODEL)
        Trainer(model, cfg.replace(seed=s)).fit(data.train)
        fp32.append(evaluate(model, data.test)["accuracy"])
    med = {m: {b: statistics.median(v) for b, v in r.items()} for m, r in results.items()}
    rows = [[m, *(f"{100 * med[m][b]:.2f}%" for b in BITS)] for m in TRAINING_METHODS]
    rows.append(["fp32 (same recipe)", *([f"{100 * statistics.median(fp32):.2f}%"] * len(BITS))])
    table = format_table(rows, ["method", *(f"{b} bit" for b in BITS)], align="l" + "r" * len(BITS))
    _plot(med, statistics.median(fp32))
    notes = [
        f"Model {MODEL} on MNIST-1D trained from scratch, {EPOCHS} epochs of Adam (lr {LR}, no weight decay), batch "
        f"{cfg.batch_size}; medians of seeds {SEEDS}. Conv and Linear weights are quantized (BatchNorm and biases",
        "stay in float, as in the paper); grid step max|w|/(2^(b-1)-1) per layer fixed at initialization (1 bit:",
        "mean|w|, codes +-1). BinaryConnect keeps float shadow weights clipped to the grid's range; stochastic and",
        "deterministic rounding store only the quantized weights. Plot: quantized_training.png.",
    ]
    print(write_results("quantized_training", "Training quantized nets: BC vs stochastic vs deterministic rounding",
                        notes, table, [{"medians": med, "runs": results, "fp32": fp32}]))  # fmt: skip


def _plot(med, fp32: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in TRAINING_METHODS:
        ax.plot(BITS, [100 * med[m][b] for b in BITS], marker="o", label=m)
    ax.axhline(100 * fp32, color="gray", ls="--", label="fp32")
    ax.set_xlabel("weight bits")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(BITS)
    ax.set_title("MNIST-1D cnn1d: training with quantized weights")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "quantized_training.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
