"""Profile of a dense model against the same model with half of its channels removed by hand: the profiler must
show fewer MACs and lower measured latency. Latency is compared as interleaved ratios (dense, pruned, dense, ...)
so that load from other work on the machine hits both alike; we report the median ratio and its spread.

Run: .venv/bin/python benchmarks/profile_pruned.py   (about 1 minute)
Writes benchmarks/results/profile_pruned.{md,json}.
"""

from __future__ import annotations

import statistics

import torch

from common import write_results
from effdl.core.table import format_table, human_count
from effdl.measure import measure_latency, profile
from effdl.models import create_model

ROUNDS = 15


def _half(config):
    return [c if c == "M" else c // 2 for c in config]


def pairs():
    from effdl.models.vgg import VGG_CONFIGS

    yield (
        "vgg11",
        (3, 32, 32),
        create_model("vgg11"),
        create_model("vgg11", config=_half(VGG_CONFIGS["11"]), hidden=256),
    )
    yield ("resnet20", (3, 32, 32), create_model("resnet20"), create_model("resnet20", widths=[8, 16, 32]))
    yield ("cnn1d", (1, 40), create_model("cnn1d"), create_model("cnn1d", channels=[16, 16, 16]))


def interleaved_ratio(a, b, x, *, rounds=ROUNDS):
    ratios, ta, tb = [], [], []
    for _ in range(rounds):
        sa = measure_latency(a, x, warmup=2, repeats=5)
        sb = measure_latency(b, x, warmup=2, repeats=5)
        ta.append(sa.median_ms)
        tb.append(sb.median_ms)
        ratios.append(sa.median_ms / sb.median_ms)
    q = statistics.quantiles(ratios, n=4)
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios), q[0], q[2]


def main() -> None:
    torch.manual_seed(0)
    rows, records = [], []
    for name, shape, dense, pruned in pairs():
        for batch in (1, 32):
            x = torch.randn(batch, *shape)
            pd, pp = profile(dense, x, latency=False), profile(pruned, x, latency=False)
            td, tp, ratio, lo, hi = interleaved_ratio(dense, pruned, x)
            rows.append(
                [
                    name,
                    batch,
                    human_count(pd.macs),
                    human_count(pp.macs),
                    f"{pd.macs / pp.macs:.2f}x",
                    f"{td:.3f}",
                    f"{tp:.3f}",
                    f"{ratio:.2f}x",
                    f"{lo:.2f}-{hi:.2f}",
                ]
            )
            records.append(
                {
                    "model": name,
                    "batch": batch,
                    "macs_dense": pd.macs,
                    "macs_pruned": pp.macs,
                    "params_dense": pd.params,
                    "params_pruned": pp.params,
                    "latency_ms_dense": td,
                    "latency_ms_pruned": tp,
                    "speedup_median": ratio,
                    "speedup_iqr": [lo, hi],
                }
            )
            print(rows[-1], flush=True)
    header = ["model", "batch", "MACs dense", "MACs half", "MAC ratio", "ms dense", "ms half", "speedup", "speedup IQR"]
    notes = [
        "Command: `.venv/bin/python benchmarks/profile_pruned.py`. MACs are per example; latency is the median of "
        f"{ROUNDS} interleaved rounds (5 timed runs each), speedup = dense/pruned per round.",
    ]
    text = write_results(
        "profile_pruned", "Profile: dense vs half the channels removed by hand", notes,
        format_table(rows, header, align="lrrrrrrrr"), records,
    )  # fmt: skip
    print(text)


if __name__ == "__main__":
    main()
