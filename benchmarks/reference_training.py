"""Reference accuracies of the embedded defaults, median of 3 seeds, trained with each model's default settings
(exactly what `effdl train --model M --data D --seed S` does).

Run: .venv/bin/python benchmarks/reference_training.py   (about 2 minutes on 2 cores)
Writes benchmarks/results/reference_training.{md,json}.
"""

from __future__ import annotations

import logging
import statistics
import time

import effdl
from common import write_results
from effdl.core.table import format_table
from effdl.train import default_train_config

CASES = [
    # model, dataset, target accuracy, reference figure to compare with
    ("cnn1d", "mnist1d", 0.97, "published CNN: 94%"),
    ("cnn1d_convbase", "mnist1d", None, "published ConvBase CNN: 94%"),
    ("mlp", "mnist1d", 0.63, "published MLP: 68%"),
    ("cnn2d", "digits", 0.97, "-"),
]
SEEDS = (0, 1, 2)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    rows, records = [], []
    for model, data, target, reference in CASES:
        accs, times = [], []
        for seed in SEEDS:
            cfg = default_train_config(model, seed=seed, progress=False)
            t0 = time.perf_counter()
            outcome = effdl.train_model(model, data, cfg)
            times.append(time.perf_counter() - t0)
            accs.append(outcome.report.summary.accuracy)
            params = outcome.report.summary.params
        med = statistics.median(accs)
        ok = "-" if target is None else ("yes" if med >= target else "NO")
        rows.append(
            [
                model,
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
                "dataset": data,
                "params": params,
                "accuracies": accs,
                "median": med,
                "train_seconds": times,
                "target": target,
                "config": cfg.replace(seed=0).to_dict(),
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
