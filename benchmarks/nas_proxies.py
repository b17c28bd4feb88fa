"""How well do zero-cost proxies rank architectures? Kendall tau and Spearman rho of every proxy against the
trained test accuracy of the committed ground truth (src/effdl/nas/data/mnist1d_cnn_v1.json), overall and
within three MAC bands, with each architecture scored at the initialization it was trained from. The proxies see
two mini-batches of 64 training examples; the run is repeated with three batch draws (median reported).

Checks the ZiCo paper's claim (Li et al., ICLR 2023: on NAS-Bench-201, ZiCo ranks above #params and every other
proxy) in this search space.

Run: .venv/bin/python benchmarks/nas_proxies.py   (about 3 minutes)
Writes benchmarks/results/nas_proxies.{md,json} and nas_proxies_scatter.png.
"""

from __future__ import annotations

import statistics

import torch

from common import RESULTS, write_results
from effdl.core.table import format_table
from effdl.data import get_dataset
from effdl.nas import evaluate_proxies, load_ground_truth

BATCH, BATCHES = 64, 2
DRAWS = (0, 1, 2)


def main() -> None:
    gt = load_ground_truth()
    data = get_dataset("mnist1d")
    runs = []
    for draw in DRAWS:
        g = torch.Generator().manual_seed(draw)
        idx = torch.randperm(len(data.train), generator=g)[: BATCH * BATCHES]
        xs = torch.stack([data.train[int(i)][0] for i in idx])
        ys = torch.stack([torch.as_tensor(data.train[int(i)][1]) for i in idx])
        batches = [(xs[i * BATCH : (i + 1) * BATCH], ys[i * BATCH : (i + 1) * BATCH]) for i in range(BATCHES)]
        ev = evaluate_proxies(gt, batches, num_bands=3, progress=True)
        runs.append(ev)
        if draw == DRAWS[0]:
            ev.plot(RESULTS / "nas_proxies_scatter.png")
    corr = [ev.correlations() for ev in runs]
    names = list(corr[0])

    def med(name, key, band=None):
        vals = [c[name][key] if band is None else c[name]["bands"][band][key] for c in corr]
        return statistics.median(vals)

    order = sorted(names, key=lambda n: -med(n, "kendall_tau"))
    bands = runs[0].bands
    rows = []
    for n in order:
        taus = [c[n]["kendall_tau"] for c in corr]
        rows.append([n, f"{med(n, 'kendall_tau'):.3f}", f"[{min(taus):.3f}, {max(taus):.3f}]",
                     f"{med(n, 'spearman_rho'):.3f}", *(f"{med(n, 'kendall_tau', b):.3f}" for b in range(len(bands))),
                     f"{1000 * statistics.median(c[n]['seconds_per_arch'] for c in corr):.1f}"])  # fmt: skip
    band_names = [f"tau in MACs {lo / 1e3:.0f}K-{hi / 1e3:.0f}K" for lo, hi in bands]
    headers = ["proxy", "Kendall tau", "range over draws", "Spearman rho", *band_names, "ms / arch"]
    table = format_table(rows, headers)
    zico, params = med("zico", "kendall_tau"), med("params", "kendall_tau")
    rank = order.index("zico") + 1
    acc = gt.column("test_accuracy")
    notes = [
        f"{len(gt.records)} architectures of `{gt.space}` trained with {gt.meta['recipe']} (test accuracy "
        f"{100 * acc.min():.1f}% to {100 * acc.max():.1f}%, median {100 * statistics.median(acc):.1f}%). Proxies on "
        f"{BATCHES} mini-batches of {BATCH} training examples; medians over {len(DRAWS)} batch draws.",
        "",
        f"ZiCo paper's claim, checked here: ZiCo's Kendall tau {zico:.3f} vs #params {params:.3f} -> "
        f"{'holds' if zico >= params else 'does not hold'} (ZiCo ranks {rank} of {len(order)} proxies).",
        "",
    ]
    records = [{"proxy": n, "kendall_tau": med(n, "kendall_tau"), "spearman_rho": med(n, "spearman_rho"),
                "draws": [c[n] for c in corr]} for n in order]  # fmt: skip
    print(write_results("nas_proxies", "Zero-cost proxies on the MNIST-1D CNN search space", notes, table, records))


if __name__ == "__main__":
    main()
