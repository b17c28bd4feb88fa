"""Real CPU speed of structured pruning: ResNet-20 (CIFAR-style, 32x32 inputs) and VGG-11 with 50% of the channels
of every prunable group removed by effdl (L1 criterion), next to Torch-Pruning (torch-pruning from PyPI,
MagnitudePruner with L1 importance, same ratio, classifier kept). Latency is measured as interleaved ratios
(the three models in a shuffled order every round) so that load from other work hits all alike; we report medians of the
per-round ratios and their interquartile range, with 1 and 2 threads, at batch 1 and 32.

Run: .venv/bin/python benchmarks/prune_speed.py   (about 3 minutes; needs `pip install effdl[bench]`)
Writes benchmarks/results/prune_speed.{md,json}.
"""

from __future__ import annotations

import copy
import random
import statistics
import warnings

import torch

from common import write_results
from effdl.core.table import format_table, human_count
from effdl.measure import count_macs, measure_latency
from effdl.models import create_model
from effdl.prune import L1FilterPruneConfig, prune_

ROUNDS = 15
RATIO = 0.5


def torch_pruning(model, x, ratio):
    """The same job done by Torch-Pruning (the peer a user would pick)."""
    import torch_pruning as tp

    model = copy.deepcopy(model)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MagnitudePruner(
            model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio, ignored_layers=[last]
        )
        pruner.step()
    return model


def interleaved(models, x, threads):
    times = {k: [] for k in models}
    order = list(models)
    rng = random.Random(0)
    for _ in range(ROUNDS):
        rng.shuffle(order)  # no model always runs right after another
        for k in order:
            times[k].append(measure_latency(models[k], x, warmup=2, repeats=5, threads=threads).median_ms)
    return times


def stats(num, den):
    ratios = [a / b for a, b in zip(num, den, strict=True)]
    q = statistics.quantiles(ratios, n=4)
    return statistics.median(ratios), q[0], q[2]


def main() -> None:
    rows, records = [], []
    for name in ("resnet20", "vgg11"):
        torch.manual_seed(0)
        dense = create_model(name).eval()
        x1 = torch.randn(1, 3, 32, 32)
        ours = copy.deepcopy(dense)
        prune_(ours, L1FilterPruneConfig(ratio=RATIO), example_inputs=x1)
        theirs = torch_pruning(dense, x1, RATIO)
        macs = {k: count_macs(m, x1) for k, m in (("dense", dense), ("effdl", ours), ("tp", theirs))}
        params = {
            k: sum(p.numel() for p in m.parameters()) for k, m in (("dense", dense), ("effdl", ours), ("tp", theirs))
        }
        for threads in (1, 2):
            for batch in (1, 32):
                x = torch.randn(batch, 3, 32, 32)
                t = interleaved({"dense": dense, "effdl": ours, "tp": theirs}, x, threads)
                s_ours, lo, hi = stats(t["dense"], t["effdl"])
                s_tp, tlo, thi = stats(t["dense"], t["tp"])
                vs, vlo, vhi = stats(t["tp"], t["effdl"])
                rec = {
                    "model": name,
                    "threads": threads,
                    "batch": batch,
                    "macs": macs,
                    "params": params,
                    "latency_ms": {k: statistics.median(v) for k, v in t.items()},
                    "speedup_effdl": [s_ours, lo, hi],
                    "speedup_torch_pruning": [s_tp, tlo, thi],
                    "effdl_vs_torch_pruning": [vs, vlo, vhi],
                }
                records.append(rec)
                rows.append(
                    [
                        name,
                        threads,
                        batch,
                        f"{macs['dense'] / macs['effdl']:.2f}x ({human_count(macs['effdl'])})",
                        f"{macs['dense'] / macs['tp']:.2f}x",
                        f"{statistics.median(t['dense']):.2f}",
                        f"{statistics.median(t['effdl']):.2f}",
                        f"{s_ours:.2f}x [{lo:.2f}-{hi:.2f}]",
                        f"{s_tp:.2f}x [{tlo:.2f}-{thi:.2f}]",
                        f"{vs:.2f}x",
                    ]
                )
                print(rows[-1], flush=True)
    headers = [
        "model",
        "threads",
        "batch",
        "MACs dense/effdl",
        "MACs dense/TP",
        "dense ms",
        "effdl ms",
        "speedup effdl [IQR]",
        "speedup Torch-Pruning [IQR]",
        "TP ms / effdl ms",
    ]
    table = format_table(rows, headers, align="lrrrrrrrrr")
    notes = [
        f"50% of the channels of every prunable group removed (L1 norm, uniform); {ROUNDS} shuffled rounds of",
        "5 timed runs each. Speedup = dense latency / pruned latency; TP = Torch-Pruning 1.6 on the same model,",
        "ratio and magnitude criterion: the widths, MACs and parameters agree exactly; the channels chosen differ",
        "(Torch-Pruning sums the importance over every coupled tensor, effdl's l1 scores the BN-folded filters).",
        "Parameters: "
        + ", ".join(
            f"{r['model']} {human_count(r['params']['dense'])} -> {human_count(r['params']['effdl'])}"
            for r in records[::4]
        )
        + ".",
    ]
    print(write_results("prune_speed", "Structured pruning: real CPU speedup vs Torch-Pruning", notes, table, records))


if __name__ == "__main__":
    main()
