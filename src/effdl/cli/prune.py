"""``effdl prune``: prune a saved model, optionally fine-tune it, and print the before/after profile."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.cli.common import (
    add_checkpoint_args,
    add_measure_args,
    load_trained,
    measure_config,
    parse_options,
)
from effdl.compress import FinetuneConfig, Recipe, compress_model
from effdl.core.errors import ConfigError
from effdl.prune import CRITERIA, MagnitudePruneConfig, StructuredPruneConfig, groups_table, sensitivity_config

__all__ = ["add_prune"]


def add_prune(sub) -> None:
    """Registers the ``prune`` sub-command."""
    p = sub.add_parser(
        "prune",
        help="prune a saved model (structured or unstructured), fine-tune, compare",
        description=(
            "Structured methods (l1, l2, bn_scale, taylor, random) physically remove channels, neurons and attention "
            "heads; 'magnitude' zeroes individual weights. Prints accuracy, parameters, MACs, size and latency "
            "before and after."
        ),
    )
    add_checkpoint_args(p)
    p.add_argument(
        "--method", default="l1", choices=[*CRITERIA.names(), "magnitude"], help="criterion, or magnitude (default l1)"
    )
    p.add_argument("--ratio", type=float, default=0.5, help="fraction of channels (or weights) removed, in [0, 1)")
    p.add_argument("--scope", choices=["layer", "global"], default=None,
                   help="rank within each layer or across layers (default: the method's own, as in the library: "
                   "layer for channels, global for magnitude)")  # fmt: skip
    p.add_argument("--global", dest="scope", action="store_const", const="global", help="same as --scope global")
    p.add_argument("--per-layer", action="append", metavar="NAME=RATIO", help="per-layer ratio (name or regex)")
    p.add_argument("--round-to", type=int, default=1, help="keep a multiple of this many channels per layer")
    p.add_argument("--ignore", action="append", default=[], metavar="NAME", help="keep this layer whole (regex)")
    p.add_argument(
        "--sensitivity",
        type=float,
        default=None,
        metavar="TOL",
        help="derive per-layer ratios by sensitivity analysis, losing at most TOL accuracy per layer (e.g. 0.01)",
    )
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tuning epochs after pruning (default 0)")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: the model's)")
    p.add_argument("--train-batch-size", type=int, default=None, help="fine-tuning batch size (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fine-tuning run")
    p.add_argument("--out", default=None, help="output folder (default runs/prune-MODEL)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT (else OUT starts over)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_measure_args(p)
    p.set_defaults(func=_prune)


def _config(args: argparse.Namespace) -> StructuredPruneConfig | MagnitudePruneConfig:
    per_layer = {k: float(v) for k, v in parse_options(args.per_layer, "--per-layer").items()}
    fields = {"ratio": args.ratio, "per_layer": per_layer, "ignore": tuple(args.ignore)}
    if args.scope is not None:
        fields["scope"] = args.scope
    if args.method == "magnitude":
        return MagnitudePruneConfig(**fields)
    return StructuredPruneConfig(criterion=args.method, round_to=args.round_to, **fields)


def _prune(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    model, data, name = load_trained(args)
    out = Path(args.out or f"runs/prune-{name}")
    sens = None
    if args.sensitivity is not None:
        config, sens = sensitivity_config(model, data, config, args.sensitivity, progress=not args.no_progress)
        out.mkdir(parents=True, exist_ok=True)
        sens.plot(out / "sensitivity.png")
        print("sensitivity (accuracy drop without retraining, validation split):")
        print(sens.to_table() + "\n")
    steps: list = [config]
    if args.finetune_epochs:
        train = {"epochs": args.finetune_epochs, "lr": args.lr, "batch_size": args.train_batch_size, "seed": args.seed}
        steps.append(FinetuneConfig(train=train))
    outcome = compress_model(model, data, Recipe(steps), out_dir=out, restart=not args.resume,
                             measure=measure_config(args), deploy_final=False, progress=not args.no_progress,
                             command="prune", details={"sensitivity": sens.to_dict()} if sens else None)  # fmt: skip
    pruned = outcome.stages[1]
    if isinstance(config, StructuredPruneConfig):
        print(groups_table(pruned.details) + "\n")
    print(f"accuracy right after pruning: {100 * (pruned.summary.accuracy or 0):.2f}%"
          + (" (then fine-tuned)\n" if args.finetune_epochs else "\n"))  # fmt: skip
    print(outcome.report.to_table())
    print(f"\nmodel: {outcome.report.artifacts['final_model']}\nreport: {out / 'report.json'}")
    return 0
