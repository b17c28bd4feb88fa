"""Quantization-aware training on MNIST-1D: the reference CNN (cnn1d) trained in fp32, then quantized at W8A8, W4A4
and W2A2 (weights per channel, activations per tensor, BatchNorm folded) and fine-tuned with QAT (STE, and LSQ).
Post-training quantization (calibration only) at the same widths is shown for comparison. 3 seeds of the fp32
run; the QAT runs start from each.

Run: .venv/bin/python benchmarks/qat_mnist1d.py   (about 4 minutes)
Writes benchmarks/results/qat_mnist1d.{md,json}.
"""

from __future__ import annotations

import copy
import statistics

import torch

from common import write_results
from effdl.core.table import format_table
from effdl.data import get_dataset
from effdl.data.loaders import make_loader
from effdl.models import create_model
from effdl.quant import QuantConfig, quantize_
from effdl.train import Trainer, default_train_config, evaluate

MODEL = "cnn1d"
SEEDS = (0, 1, 2)
WIDTHS = ((8, 8), (4, 4), (2, 2))
QAT_EPOCHS = 15


def main() -> None:
    data = get_dataset("mnist1d")
    cfg = default_train_config(MODEL, progress=False)
    qat_cfg = cfg.replace(epochs=QAT_EPOCHS, lr=1e-3, optimizer="adam", weight_decay=0.0)
    x = data.example_inputs(64)
    records: dict[str, list[float]] = {"fp32": []}
    for seed in SEEDS:
        torch.manual_seed(seed)
        base = create_model(MODEL)
        Trainer(base, cfg.replace(seed=seed)).fit(data.train)
        records["fp32"].append(evaluate(base, data.test)["accuracy"])
        for bw, ba in WIDTHS:
            for method in ("ptq", "qat", "qat-lsq"):
                model = copy.deepcopy(base).eval()
                qc = QuantConfig(bits_w=bw, bits_a=ba, lsq=method == "qat-lsq", observer="moving_average")
                quantize_(model, qc, example_inputs=x, data=make_loader(data.train, 256, shuffle=True, seed=seed))
                if method != "ptq":
                    Trainer(model, qat_cfg.replace(seed=seed)).fit(data.train)
                records.setdefault(f"W{bw}A{ba} {method}", []).append(evaluate(model, data.test)["accuracy"])
    fp32 = statistics.median(records["fp32"])
    rows = [
        [
            name,
            f"{100 * statistics.median(v):.2f}%",
            f"{100 * (statistics.median(v) - fp32):+.2f}",
            " / ".join(f"{100 * a:.1f}" for a in v),
        ]
        for name, v in records.items()
    ]
    table = format_table(rows, ["model", "median test accuracy", "vs fp32 (points)", "seeds"], align="lrrl")
    notes = [
        f"Model {MODEL} on MNIST-1D ({cfg.epochs}-epoch fp32 recipe). ptq: calibration on 8 batches of 256, no",
        f"training. qat / qat-lsq: {QAT_EPOCHS} epochs of Adam (lr 1e-3, no weight decay) from the fp32 weights,",
        "fake-quant with the straight-through estimator; qat-lsq learns the step sizes (Esser et al. 2020).",
        "Every Conv and Linear layer is quantized, the first and the last included; BatchNorm is folded first.",
    ]
    print(write_results("qat_mnist1d", "QAT on MNIST-1D: W8A8, W4A4, W2A2", notes, table, [records]))


if __name__ == "__main__":
    main()
