"""Lottery tickets on MNIST-1D: iterative magnitude pruning with rewinding (Frankle et al. 2020) reaches high
sparsity and matches the dense accuracy, while the same mask with a fresh random initialization is worse.

Run: .venv/bin/python benchmarks/lottery_tickets.py   (about 2 minutes)
Writes benchmarks/results/lottery_tickets.{md,json}.
"""

from __future__ import annotations

import statistics

import torch

from common import write_results
from effdl.compress import find_lottery_ticket
from effdl.core.table import format_table
from effdl.data import get_dataset
from effdl.models import create_model
from effdl.prune import KeepSparsity, LotteryTicketConfig, apply_masks_, reinitialize_
from effdl.train import Trainer, default_train_config, evaluate

MODEL = "cnn1d"
CONFIG = LotteryTicketConfig(rounds=4, ratio=0.4, rewind_step=200)
CONTROL_SEEDS = (1, 2, 3)


def main() -> None:
    data = get_dataset("mnist1d")
    train_cfg = default_train_config(MODEL, progress=False)
    torch.manual_seed(0)
    model = create_model(MODEL)
    result = find_lottery_ticket(model, data, train_cfg, CONFIG)
    dense = result.rounds[0]["accuracy"]
    ticket = result.rounds[-1]["accuracy"]
    controls = []
    for seed in CONTROL_SEEDS:  # same mask, fresh random initialization
        net = create_model(MODEL)
        reinitialize_(net, seed=seed)
        apply_masks_(net, result.masks)
        Trainer(net, train_cfg, callbacks=[KeepSparsity(result.masks)]).fit(data.train)
        controls.append(evaluate(net, data.test)["accuracy"])
    rows = [[r["round"], f"{100 * r['sparsity']:.1f}%", f"{100 * r['accuracy']:.2f}%", ""] for r in result.rounds]
    rows[-1][3] = "winning ticket (rewound to step 200)"
    rows.append(
        [
            "control",
            f"{100 * result.rounds[-1]['sparsity']:.1f}%",
            f"{100 * statistics.mean(controls):.2f}% [{100 * min(controls):.1f}-{100 * max(controls):.1f}]",
            f"same mask, random re-init ({len(CONTROL_SEEDS)} seeds, mean [min-max])",
        ]
    )
    table = format_table(rows, ["round", "sparsity", "test accuracy", "note"], align="rrrl")
    notes = [
        f"Model {MODEL} on MNIST-1D, default recipe ({train_cfg.epochs} epochs) in every round; global magnitude",
        f"pruning of {CONFIG.rate:.0%} of the remaining Conv/Linear weights per round, {CONFIG.rounds} rounds;",
        f"survivors rewound to their values after {CONFIG.rewind_step} steps.",
        f"Ticket - dense: {100 * (ticket - dense):+.2f} points; ticket - random re-init: "
        f"{100 * (ticket - statistics.mean(controls)):+.2f} points.",
    ]
    records = {"rounds": result.rounds, "controls": controls, "config": CONFIG.to_dict()}
    print(write_results("lottery_tickets", "Lottery tickets with rewinding on MNIST-1D", notes, table, [records]))


if __name__ == "__main__":
    main()
