"""Reference accuracies of the embedded defaults, median of 3 seeds, trained with each model's default settings
(exactly what `effdl train --model M --data D --seed S` does).

Run: .venv/bin/python benchmarks/reference_training.py   (about 2 minutes on 2 cores)
The 2-process row runs `effdl train --nproc 2` (torchrun, gloo; batch size per process, so twice the global batch).
Writes benchmarks/results/reference_training.{md,json}.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import effdl
from common import write_results
from effdl.core.table import format_table
from effdl.train import default_train_config

CASES = [
    # model, dataset, processes, target accuracy, reference figure to compare with
    ("cnn1d", "mnist1d", 1, 0.97, "published CNN: 94%"),
    ("cnn1d", "mnist1d", 2, 0.97, "same, data-parallel (torchrun, gloo)"),
    ("cnn1d_convbase", "mnist1d", 1, None, "published ConvBase CNN: 94%"),
    ("mlp", "mnist1d", 1, 0.63, "published MLP: 68%"),
    ("cnn2d", "digits", 1, 0.97, "-"),
]
SEEDS = (0, 1, 2)


def run_once(model: str, data: str, seed: int, nproc: int) -> tuple[float, int, float]:
    """(test accuracy, parameters, seconds) of one run; several processes go through `effdl train --nproc`."""
    t0 = time.perf_counter()
    if nproc == 1:
        summary = effdl.train_model(model, data, default_train_config(model, seed=seed, progress=False)).report.summary
        return summary.accuracy, summary.params, time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "effdl", "train", "--model", model, "--data", data, "--seed", str(seed),
               "--nproc", str(nproc), "--out", out, "--no-progress", "-q"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        summary = json.loads((Path(out) / "report.json").read_text())["summary"]
    return summary["accuracy"], summary["params"], time.perf_counter() - t0


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    rows, records = [], []
    for model, data, nproc, target, reference in CASES:
        accs, times = [], []
        for seed in SEEDS:
            acc, params, seconds = run_once(model, data, seed, nproc)
            accs.append(acc)
            times.append(seconds)
        cfg = default_train_config(model)
        med = statistics.median(accs)
        ok = "-" if target is None else ("yes" if med >= target else "NO")
        rows.append(
            [
                model if nproc == 1 else f"{model} x{nproc} proc",
                data,
                params,
                f"{100 * med:.2f}%",
                " / ".join(f"{100 * a:.1f}" for a in accs),
                f"{statistics.median(times):.1f}",
                f">= {100 * target:.0f}%" if target else "-",
                ok,
                reference,
            ]
        )
        records.append(
            {
                "model": model,
                "processes": nproc,
                "dataset": data,
                "params": params,
                "accuracies": accs,
                "median": med,
                "train_seconds": times,
                "target": target,
                "config": cfg.to_dict(),
            }
        )
        print(rows[-1], flush=True)
    header = [
        "model",
        "data",
        "params",
        "median acc",
        "seeds 0/1/2 (%)",
        "train s (median)",
        "target",
        "met",
        "reference",
    ]
    notes = [
        "Command: `.venv/bin/python benchmarks/reference_training.py`; each run is `effdl train --model M --data D "
        "--seed S` with the model's default settings (`effdl models --json` lists them). Train time includes the "
        "final evaluation and profile.",
    ]
    text = write_results(
        "reference_training", "Reference training (median of 3 seeds)", notes,
        format_table(rows, header, align="llrrlrlll"), records,
    )  # fmt: skip
    print(text)


if __name__ == "__main__":
    main()
