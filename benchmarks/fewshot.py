"""Few-shot learning on the embedded glyph dataset (Omniglot-like, rendered from matplotlib's fonts): ProtoNet and
R2-D2 heads on Conv-4, trained on 20-way 1-shot episodes of the training alphabets, evaluated on 5-way 1-shot and
5-shot episodes of held-out alphabets (1,000 each, 95% confidence intervals), against the same backbone untrained.

Run: .venv/bin/python benchmarks/fewshot.py [--episodes 4000] [--test-episodes 1000]   (about 15 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import time

from common import write_results
from effdl.core.table import format_table
from effdl.data import load_glyphs
from effdl.fewshot import FewShotConfig, MetaLearner, evaluate_episodes, train_meta_learner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4000)
    parser.add_argument("--test-episodes", type=int, default=1000)
    args = parser.parse_args()
    g = load_glyphs()
    test = g.test
    rows, records = [], []
    for head in ("untrained", "proto", "r2d2"):
        t0 = time.perf_counter()
        if head == "untrained":
            model = MetaLearner()
        else:
            model = train_meta_learner(g.train.images, g.train.labels, FewShotConfig(head=head, episodes=args.episodes))
        seconds = time.perf_counter() - t0
        scores = {k: evaluate_episodes(model, test.images, test.labels, n_way=5, k_shot=k, episodes=args.test_episodes)
                  for k in (1, 5)}  # fmt: skip
        rows.append([head, str(scores[1]), str(scores[5]), f"{seconds:.0f} s"])
        shots = {f"{k}-shot": s.to_dict() for k, s in scores.items()}
        records.append({"head": head, "train_seconds": seconds, **shots})
        print(rows[-1], flush=True)
    table = format_table(rows, ["learner (Conv-4)", "5-way 1-shot", "5-way 5-shot", "training"], align="lrrr")
    notes = [
        f"{g.describe()}. Training: {args.episodes} episodes of 20-way 1-shot with 5 queries per class, Adam 1e-3 "
        f"(cosine), seed 0. Test: {args.test_episodes} episodes each on the test alphabets "
        f"({', '.join(sorted(set(test.alphabets)))}), 15 queries per class; mean accuracy +- the half-width of "
        "the 95% confidence interval. 'untrained' is the same backbone at its initialization with the ProtoNet head.",
    ]
    print(write_results("fewshot", "Few-shot learning on held-out glyph alphabets", notes, table, records))


if __name__ == "__main__":
    main()
