"""Proxy-guided search under a MAC budget: does maximizing ZiCo find an architecture whose trained accuracy is
within 1 point of the best architecture of the ground truth under the same budget, in under 5 minutes?

For each budget (the 25th and 50th percentiles of the ground truth's MACs) and 3 search seeds: regularized
evolution on ZiCo (200 architectures scored), the same with random sampling, and evolution on SynFlow, NASWOT,
MACs and #params; each
winner is trained with the ground truth's recipe (same seeded initialization) and compared with the best
ground-truth architecture under the budget.

Run: .venv/bin/python benchmarks/nas_search.py   (about 5 minutes)
Writes benchmarks/results/nas_search.{md,json}.
"""

from __future__ import annotations

import statistics

import numpy as np

from common import write_results
from effdl.core.table import format_table, human_count
from effdl.data import get_dataset
from effdl.measure import stack_batches
from effdl.nas import SearchConfig, load_ground_truth, search_architectures
from effdl.train import TrainConfig, Trainer, evaluate

SEEDS = (0, 1, 2)
SETUPS = [("zico", "evolution"), ("zico", "random"), ("synflow", "evolution"), ("naswot", "evolution"),
          ("macs", "evolution"), ("params", "evolution")]  # fmt: skip


def main() -> None:
    gt = load_ground_truth()
    data = get_dataset("mnist1d")
    batches = stack_batches(data.train, 64, max_examples=128)
    recipe = gt.meta["recipe"]
    macs, acc = gt.column("macs"), gt.column("test_accuracy")

    def train(model):
        Trainer(model, TrainConfig(**recipe, eval_every=recipe["epochs"], progress=False)).fit(data.train)
        return evaluate(model, data.test)["accuracy"]

    records, rows = [], []
    for q in (25, 50):
        budget = int(np.percentile(macs, q))
        best_gt = float(acc[macs <= budget].max())
        for proxy, method in SETUPS:
            found = []
            for seed in SEEDS:
                cfg = SearchConfig(proxy=proxy, method=method, budget_macs=budget, samples=200, seed=seed)
                r = search_architectures("mnist1d_cnn", batches, cfg, train_fn=train)
                w = r.best[0]
                found.append({"seed": seed, "arch": w.arch, "macs": w.macs, "accuracy": w.accuracy,
                              "search_s": r.seconds, "scored": r.scored})  # fmt: skip
                print(q, proxy, method, found[-1], flush=True)
            med_acc = statistics.median(f["accuracy"] for f in found)
            gap = 100 * (best_gt - med_acc)
            within = sum(100 * (best_gt - f["accuracy"]) <= 1.0 for f in found)
            rows.append([f"{human_count(budget)} (p{q})", f"{proxy} / {method}", f"{100 * best_gt:.2f}%",
                         f"{100 * med_acc:.2f}%", f"{gap:+.2f}", f"{within}/{len(SEEDS)}",
                         f"{statistics.median(f['search_s'] for f in found):.1f}",
                         ", ".join(f["arch"] for f in found)])  # fmt: skip
            records.append({"budget_macs": budget, "percentile": q, "proxy": proxy, "method": method,
                            "best_ground_truth": best_gt, "runs": found})  # fmt: skip
    headers = ["MAC budget", "proxy / search", "best in ground truth", "winner trained (median)", "gap (points)",
               "within 1 point", "search s", "winners"]  # fmt: skip
    notes = [
        f"Ground truth: {len(gt.records)} architectures of `{gt.space}`; recipe {recipe}. Each search scores 200 "
        "architectures within the budget (ZiCo on 2 batches of 64); the winner is trained once with the same "
        "recipe and initialization seed as the ground truth. 'best in ground truth' is the highest trained "
        "accuracy among the ground-truth architectures under the budget (a maximum over single noisy runs).",
        "",
    ]
    print(write_results("nas_search", "Proxy-guided search under a MAC budget", notes, format_table(rows, headers),
                        records))  # fmt: skip


if __name__ == "__main__":
    main()
