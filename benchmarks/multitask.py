"""Multi-task learning on the embedded scene dataset (segmentation, depth, normals, edges, counts), median of 3 seeds:
(1) one network per task vs hard sharing vs AdaShare (Sun et al., NeurIPS 2020) on the same residual backbone:
per-task metrics, the multi-task gain against the single-task networks, parameters, MACs per image, and the learned
sharing pattern by depth; (2) label-budget allocation (Sun et al. 2023) under three label-cost settings: uniform
count, uniform cost and cost-proportional against the task-adaptive allocator, each allocation trained and scored
against a network trained with every label.

Run: .venv/bin/python benchmarks/multitask.py [--seeds 0,1,2] [--part sharing|budget|both]   (about 75 minutes on
2 cores; finished models are kept under --work, so a rerun continues)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from common import RESULTS, write_results
from effdl.core.table import format_table
from effdl.data import load_scenes
from effdl.multitask import AdaShareConfig, MultiTaskConfig, compare_allocations, compare_sharing, scene_task_specs

COSTS = {
    "dense labels dear": {"segment": 8.0, "depth": 4.0, "normal": 4.0, "edge": 2.0, "count": 0.5},
    "equal costs": {"segment": 1.0, "depth": 1.0, "normal": 1.0, "edge": 1.0, "count": 1.0},
    "geometry dear": {"segment": 1.0, "depth": 6.0, "normal": 6.0, "edge": 1.0, "count": 1.0},
}


def _median(values):
    return statistics.median(values)


def sharing(args, seeds, work: Path) -> None:
    specs = scene_task_specs()
    runs, times = [], []
    for seed in seeds:
        s = load_scenes(train=args.train, test=args.test, seed=seed)
        t0 = time.perf_counter()
        config = MultiTaskConfig(epochs=args.epochs, seed=seed)
        ada = AdaShareConfig(warmup_epochs=args.epochs // 4, policy_epochs=3 * args.epochs // 4,
                             retrain_epochs=args.epochs, temperature_decay=0.965)  # fmt: skip
        runs.append(compare_sharing(s.train.dataset(), s.test.dataset(), specs, config, ada,
                                    out_dir=work / f"sharing-seed{seed}", resume=True))  # fmt: skip
        times.append(time.perf_counter() - t0)
        print(runs[-1].to_table(), flush=True)
    methods = list(runs[0].rows)
    rows = []
    for m in methods:
        per = [r.rows[m] for r in runs]
        rows.append([m, *(f"{_median([p['metrics'][t] for p in per]):.4g}" for t in specs),
                     f"{_median([p['delta_mtl'] for p in per]):+.2f}%",
                     ", ".join(f"{p['delta_mtl']:+.2f}" for p in per),
                     f"{per[0]['params']:,}", f"{_median([p['macs'] for p in per]):,.0f}"])  # fmt: skip
    headers = ["method", *(f"{t} ({s.metric_name})" for t, s in specs.items()), "delta MTL (median)",
               "per seed", "params", "MACs/image"]  # fmt: skip
    table = format_table(rows, headers, align="l" + "r" * (len(headers) - 1))
    depth = [_median([r.sharing_by_depth()[b] for r in runs]) for b in range(len(runs[0].policy[0]))]
    hard_params = runs[0].rows["hard sharing"]["params"]
    notes = [
        f"{load_scenes(train=args.train, test=args.test).describe()}. Backbone: stem + 6 residual blocks (16, 16, "
        f"32, 32, 32, 32 channels; the third halves the resolution); a small head per task. Every model trains "
        f"{args.epochs} epochs (Adam 2e-3, cosine, batch 64); AdaShare: {args.epochs // 4} warm-up epochs of hard "
        f"sharing, {3 * args.epochs // 4} of policy learning (Gumbel temperature 5 x 0.965 per epoch, curriculum "
        "from the last block, sparsity and sharing weights 0.05), then "
        f"{args.epochs} epochs from scratch with the policy fixed. Seeds "
        f"{', '.join(map(str, seeds))} (data, weights, batches); metrics are medians over seeds; delta MTL is the "
        "mean relative change against the single-task networks (sign flipped where lower is better).",
        "A small training set: multi-task learning pays where labels are few. Development runs (seed 0, not part of "
        "this script) with 2,000 training scenes and 20 epochs found sharing costing more than it gave: counting "
        "gained, the dense tasks lost more.",
        f"AdaShare parameters / hard sharing: {runs[0].rows['AdaShare']['params'] / hard_params:.4f} (the policy "
        "logits are not counted: 60 numbers); single-task: the five networks together.",
        "AdaShare's policies, share of task pairs executing each block (median over seeds), block 1 to 6: "
        + ", ".join(f"{d:.0%}" for d in depth) + ".",
        "Seed 0's policy (x executed, . skipped; select probability):\n\n" + runs[0].policy_table() + "\n",
    ]
    runs[0].plot(RESULTS / "multitask_policy.png")
    records = [{"seed": seed, **r.to_dict(), "seconds": t} for seed, r, t in zip(seeds, runs, times, strict=True)]
    print(write_results("multitask", "Multi-task learning: AdaShare vs hard sharing vs single-task", notes, table,
                        records))  # fmt: skip


def budget(args, seeds, work: Path) -> None:
    specs = scene_task_specs()
    rows, records, pilots = [], [], []
    wins = {}
    for name, costs in COSTS.items():
        scores: dict[str, list[float]] = {}
        counts: dict[str, dict] = {}
        for seed in seeds:
            s = load_scenes(train=args.pool, val=args.val, test=args.test, seed=seed)
            amount = args.budget_share * args.pool * sum(costs.values())
            r = compare_allocations(s.train.dataset(), s.val.dataset(), s.test.dataset(), specs, costs, amount,
                                    MultiTaskConfig(seed=seed), steps=args.steps, pilot_share=args.pilot_share,
                                    out_dir=work / f"budget-seed{seed}")  # fmt: skip
            print(name, seed, r.to_table(), flush=True)
            records.append({"costs": name, "seed": seed, **r.to_dict()})
            p = r.pilot
            pilots.append([name if seed == seeds[0] else "", str(seed), f"{p['noise'][next(iter(specs))]:.2f}",
                           *(f"{p['gains'][t]:+.2f} -> {p['shrunk'][t]:+.2f}" for t in specs),
                           "yes" if r.rows["adaptive"]["counts"] == r.rows["uniform-cost"]["counts"] else "no"])
            for strategy, row in r.rows.items():
                scores.setdefault(strategy, []).append(row["score"])
                counts.setdefault(strategy, row["counts"])
        medians = {k: _median(v) for k, v in scores.items()}
        best_fixed = max((k for k in medians if k != "adaptive"), key=medians.get)
        wins[name] = (medians["adaptive"] >= medians[best_fixed], best_fixed)
        for strategy, m in medians.items():
            c = counts[strategy]
            rows.append([name if strategy == "uniform-count" else "", strategy,
                         " / ".join(str(c[t]) for t in specs), f"{m:+.2f}%",
                         ", ".join(f"{v:+.2f}" for v in scores[strategy])])  # fmt: skip
    table = format_table(rows, ["label costs", "strategy", f"labels ({' / '.join(specs)}), seed 0",
                                "score (median)", "per seed"], align="llrrr")  # fmt: skip
    verdict = "Adaptive >= best fixed strategy: " + "; ".join(
        f"{k}: {'yes' if ok else 'no'} (best fixed {b})" for k, (ok, b) in wins.items()) + "."
    notes = [
        f"Pool: {args.pool} training scenes; test: {args.test}. Budget: what labelling {args.budget_share:.0%} of "
        "the pool for every task costs. Label costs per task (segment, depth, normal, edge, count): "
        + "; ".join(f"{k}: {', '.join(f'{v:g}' for v in c.values())}" for k, c in COSTS.items()) + ". Each "
        f"allocation trains a hard-sharing network for {args.steps} steps (each task's loss over its labelled "
        "images); score: multi-task gain (percent) against the same network trained with every label of the pool. "
        "Fixed strategies: labels per task proportional to 1 (uniform count), to 1/cost (uniform cost) or to cost "
        f"(cost-proportional). Adaptive: 6 pilot trainings, scored on {args.val} validation scenes (never the test "
        f"scenes): the uniform-cost allocation of {args.pilot_share:.0%} of the budget, then each task alone "
        "doubled; a task's gain is the multi-task gain of its doubled run against the base run; the noise of one "
        "run is how much each task's metric moves across the runs where its own labels stay the same; the gains "
        "are shrunk toward their mean by that noise (empirical Bayes), and labels go in proportion to shrunk gain "
        "/ cost (the optimum of a log curve per task), every task keeping the labels the pilot bought (counted in "
        f"the budget: the pilot spends {2 * args.pilot_share:.0%} of it). Where the pilot finds no difference "
        "beyond its noise the adaptive allocation is exactly uniform cost. Every allocation trains on the same "
        f"batches of the whole pool (only the labels differ). Median over seeds {', '.join(map(str, seeds))}.",
        verdict,
        "The adaptive pilots (validation scenes): noise of a gain (percent, the same for every task), and each "
        "task's gain when its labels double, raw -> shrunk:\n\n"
        + format_table(pilots, ["label costs", "seed", "noise", *specs, "adaptive = uniform cost"],
                       align="lr" + "r" * (len(specs) + 1) + "l") + "\n",
    ]
    print(write_results("multitask_budget", "Label-budget allocation across tasks", notes, table, records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--part", default="both", choices=("sharing", "budget", "both"))
    parser.add_argument("--train", type=int, default=500, help="training scenes of the sharing study")
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--pool", type=int, default=1000, help="scenes that can be labelled in the budget study")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--budget-share", type=float, default=0.1)
    parser.add_argument("--val", type=int, default=500, help="validation scenes scoring the adaptive pilot")
    parser.add_argument("--pilot-share", type=float, default=0.25)
    parser.add_argument("--work", default="runs/bench-multitask-v3", help="where finished models' figures are kept")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work)
    if args.part in ("sharing", "both"):
        sharing(args, seeds, work)
    if args.part in ("budget", "both"):
        budget(args, seeds, work)


if __name__ == "__main__":
    main()
