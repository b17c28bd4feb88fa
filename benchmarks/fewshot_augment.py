"""Augmentation for meta-learning (Ni et al., ICML 2021) on the glyph dataset, in the regime where it matters: ProtoNet
on Conv-4 trained on few classes (64 of the training alphabets' classes, as many as mini-ImageNet's training split)
long enough to fit them, so that the plain learner overfits. Each run augments one part of every episode: the
support, the query, the shots (augmented copies added to the support), the query with CutMix, the task (a class
rotated by 90/180/270 degrees becomes a new class), the task and query together, and Meta-MaxUp (m=4) on the latter.
All runs see the same episodes; all but Meta-MaxUp cost the same compute (it computes four versions per episode).
Judged on 5-way 1-shot and 20-way 1-shot episodes of the held-out test alphabets (95% intervals).

Run: .venv/bin/python benchmarks/fewshot_augment.py [--classes 64] [--episodes 1500]   (about 40 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from common import write_results
from effdl.core.table import format_table
from effdl.data import load_glyphs
from effdl.fewshot import AugmentConfig, EpisodeScore, FewShotConfig, evaluate_episodes, train_meta_learner

QUERY = ("cutout", "shift")
RUNS = {
    "none": None,
    "support: cutout + shift": AugmentConfig(support=QUERY),
    "query: cutout + shift": AugmentConfig(query=QUERY),
    "query: CutMix": AugmentConfig(query_cutmix=1.0),
    "shot: 2 shifted copies": AugmentConfig(shots=("shift",), shot_copies=2),
    "task: rotation (p=0.5)": AugmentConfig(task_rotation=0.5),
    "task + query": AugmentConfig(query=QUERY, task_rotation=0.5),
    "Meta-MaxUp m=4: task + query": AugmentConfig(query=QUERY, task_rotation=0.5, maxup=4),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=1500)
    parser.add_argument("--test-episodes", type=int, default=1000)
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated run names (default all)")
    parser.add_argument("--work", default="runs/bench-fewshot-augment", help="finished runs are kept here")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    g = load_glyphs()
    train, test = g.train, g.test
    keep = torch.randperm(train.num_classes, generator=torch.Generator().manual_seed(0))[: args.classes]
    mask = torch.isin(train.labels, keep)
    images, labels = train.images[mask], train.labels[mask]
    rows, records = [], []
    for name in args.runs.split(","):
        aug = RUNS[name]
        done = work / f"{name.replace(' ', '_').replace(':', '').replace('/', '')}.json"
        if done.exists():  # a finished run of an interrupted benchmark
            record = json.loads(done.read_text())
            records.append(record)
            rows.append([name, *(str(EpisodeScore(**record[k])) for k in ("5-way 1-shot", "20-way 1-shot")),
                         f"{100 * record['training classes 5-way 1-shot']['accuracy']:.2f}%",
                         f"{record['seconds']:.0f} s"])  # fmt: skip
            continue
        t0 = time.perf_counter()
        model = train_meta_learner(images, labels, FewShotConfig(episodes=args.episodes), augment=aug)
        seconds = time.perf_counter() - t0
        five = evaluate_episodes(model, test.images, test.labels, n_way=5, k_shot=1, episodes=args.test_episodes)
        twenty = evaluate_episodes(model, test.images, test.labels, n_way=20, k_shot=1, n_query=5,
                                   episodes=args.test_episodes // 2)  # fmt: skip
        seen = evaluate_episodes(model, images, labels, n_way=5, k_shot=1, n_query=10, episodes=300, seed=7)
        rows.append([name, str(five), str(twenty), f"{100 * seen.accuracy:.2f}%", f"{seconds:.0f} s"])
        records.append({"run": name, "augment": aug.to_dict() if aug else None, "seconds": seconds,
                        "5-way 1-shot": five.to_dict(), "20-way 1-shot": twenty.to_dict(),
                        "training classes 5-way 1-shot": seen.to_dict()})  # fmt: skip
        done.write_text(json.dumps(records[-1]))
        print(rows[-1], flush=True)
    table = format_table(rows, ["augmentation", "5-way 1-shot (test)", "20-way 1-shot (test)", "training classes",
                                "training"], align="lrrrr")  # fmt: skip
    by = {r["run"]: r["5-way 1-shot"] for r in records}
    notes = [
        f"{g.describe()}. ProtoNet (Conv-4) trained on {args.classes} classes of the training alphabets (drawn with "
        f"seed 0, {len(images)} images), {args.episodes} episodes of 20-way 1-shot with 5 queries, Adam 1e-3 "
        f"(cosine), seed 0; the same episodes in every run. Test: {args.test_episodes} 5-way and "
        f"{args.test_episodes // 2} 20-way 1-shot episodes of the test alphabets (mean +- 95% interval); "
        "'training classes': 5-way 1-shot on the classes trained on (how well the learner fits them). Training "
        "times were measured with other benchmarks sharing the CPU: they are not comparable between rows.",
    ]
    if "none" in by and "Meta-MaxUp m=4: task + query" in by:
        none, maxup = by["none"], by["Meta-MaxUp m=4: task + query"]
        apart = maxup["accuracy"] - maxup["ci95"] > none["accuracy"] + none["ci95"]
        notes.append(f"Meta-MaxUp minus none, 5-way 1-shot: {100 * (maxup['accuracy'] - none['accuracy']):+.2f} "
                     f"points; 95% intervals {'do not overlap' if apart else 'overlap'}.")  # fmt: skip
    if "query: cutout + shift" in by and "support: cutout + shift" in by:
        q, s = by["query: cutout + shift"]["accuracy"], by["support: cutout + shift"]["accuracy"]
        notes.append(f"Query minus support augmentation (same augmentations, same compute): {100 * (q - s):+.2f} "
                     "points.")  # fmt: skip
    print(write_results("fewshot_augment", "Augmentation for meta-learning", notes, table, records))


if __name__ == "__main__":
    main()
