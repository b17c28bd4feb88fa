"""Does distillation help a pruned student? cnn1d on MNIST-1D, L1 structured pruning (50% and 75% of the
channels), then the same fine-tune with and without KD from the unpruned model; median of 3 seeds.

Run: .venv/bin/python benchmarks/distill_pruned.py   (about 2 minutes)
Writes benchmarks/results/distill_pruned.{md,json}.
"""

from __future__ import annotations

import copy
import statistics

import torch

from common import write_results
from effdl.core.table import format_table
from effdl.data import get_dataset
from effdl.distill import Distillation, DistillConfig
from effdl.models import create_model
from effdl.prune import L1FilterPruneConfig, prune_
from effdl.train import Trainer, default_train_config, evaluate

SEEDS = (0, 1, 2)
RATIOS = (0.5, 0.75)
EPOCHS = 5
KD = DistillConfig(alpha=0.5, temperature=4.0)


def main() -> None:
    data = get_dataset("mnist1d")
    records = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        teacher = create_model("cnn1d")
        cfg = default_train_config("cnn1d", progress=False, seed=seed)
        Trainer(teacher, cfg).fit(data.train)
        teacher.eval()
        rec = {"seed": seed, "teacher": evaluate(teacher, data.test)["accuracy"]}
        for ratio in RATIOS:
            pruned = copy.deepcopy(teacher)
            prune_(pruned, L1FilterPruneConfig(ratio=ratio), example_inputs=data.example_inputs(2))
            rec[f"{ratio} pruned"] = evaluate(pruned, data.test)["accuracy"]
            for kd in (False, True):
                student = copy.deepcopy(pruned)
                callbacks = [Distillation(teacher, KD)] if kd else []
                Trainer(student, cfg.replace(epochs=EPOCHS), callbacks=callbacks).fit(data.train)
                rec[f"{ratio} {'kd' if kd else 'plain'}"] = evaluate(student, data.test)["accuracy"]
        records.append(rec)
        print(rec, flush=True)

    def med(key):
        return statistics.median(r[key] for r in records)

    rows = []
    for ratio in RATIOS:
        plain, kd = med(f"{ratio} plain"), med(f"{ratio} kd")
        wins = sum(r[f"{ratio} kd"] > r[f"{ratio} plain"] for r in records)
        rows.append([f"{ratio:.0%} of channels", f"{100 * med(f'{ratio} pruned'):.2f}%", f"{100 * plain:.2f}%",
                     f"{100 * kd:.2f}%", f"{100 * (kd - plain):+.2f}", f"{wins}/{len(SEEDS)}"])  # fmt: skip
    headers = ["pruned", "no fine-tune", f"fine-tune {EPOCHS} ep.", f"fine-tune {EPOCHS} ep. + KD", "KD gain",
               "seeds where KD wins"]  # fmt: skip
    table = format_table(rows, headers, align="lrrrrr")
    notes = [
        f"Teacher: cnn1d trained with its recommended settings, median {100 * med('teacher'):.2f}% (seeds {SEEDS}).",
        f"Student: the teacher with L1 structured pruning, fine-tuned {EPOCHS} epochs with the same settings;",
        f"KD: Hinton loss, alpha {KD.alpha}, temperature {KD.temperature}. Medians over the seeds.",
    ]
    print(write_results("distill_pruned", "Distillation for a pruned student", notes, table, records))


if __name__ == "__main__":
    main()
