"""``effdl prune``: prune a saved model, optionally fine-tune it, and print the before/after profile."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.cli.common import add_data_args, add_measure_args, checkpoint_dataset, data_options, parse_options
from effdl.core.errors import ConfigError
from effdl.data import get_dataset
from effdl.models import load_model, model_spec
from effdl.prune import CRITERIA, MagnitudePruning, StructuredPruning
from effdl.prune.job import groups_table, prune_model
from effdl.train import default_train_config

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
    p.add_argument("--checkpoint", required=True, help="trained model file (.safetensors)")
    p.add_argument("--model", default=None, help="model name, for checkpoints without a saved spec")
    add_data_args(p, default=None)
    p.add_argument(
        "--method", default="l1", choices=[*CRITERIA.names(), "magnitude"], help="criterion, or magnitude (default l1)"
    )
    p.add_argument("--ratio", type=float, default=0.5, help="fraction of channels (or weights) removed, in [0, 1)")
    p.add_argument("--global", dest="global_ranking", action="store_true", help="rank across layers")
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
    p.add_argument("--resume", action="store_true", help="continue an interrupted fine-tuning run in OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--trust-pickle", action="store_true", help="accept a torch.save pickle (loaded tensors-only)")
    add_measure_args(p)
    p.set_defaults(func=_prune)


def _config(args: argparse.Namespace):
    per_layer = {k: float(v) for k, v in parse_options(args.per_layer, "--per-layer").items()}
    if args.method == "magnitude":
        return MagnitudePruning(
            sparsity=args.ratio,
            scope="global" if args.global_ranking else "layer",
            per_layer=per_layer,
            ignore=tuple(args.ignore),
        )
    return StructuredPruning(
        criterion=args.method,
        ratio=args.ratio,
        per_layer=per_layer,
        global_ranking=args.global_ranking,
        round_to=args.round_to,
        ignore=tuple(args.ignore),
    )


def _prune(args: argparse.Namespace) -> int:
    config = _config(args)
    model = load_model(args.checkpoint, model=args.model, trust_pickle=args.trust_pickle)
    data = get_dataset(args.data or checkpoint_dataset(args.checkpoint), **data_options(args))
    name = (model_spec(model) or {}).get("name", args.model or "model")
    if args.finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    finetune = None
    if args.finetune_epochs:
        finetune = default_train_config(
            name,
            epochs=args.finetune_epochs,
            lr=args.lr,
            batch_size=args.train_batch_size,
            seed=args.seed,
            progress=not args.no_progress,
        )
    out = Path(args.out or f"runs/prune-{name}")
    outcome = prune_model(
        model,
        data,
        config,
        finetune=finetune,
        out_dir=out,
        resume=args.resume,
        sensitivity_tolerance=args.sensitivity,
        profile_batch_size=args.batch_size,
        threads=args.threads,
        repeats=args.repeats,
        progress=not args.no_progress,
    )
    report = outcome.report
    if outcome.sensitivity is not None:
        print("sensitivity (accuracy drop without retraining, validation split):")
        print(outcome.sensitivity.to_table() + "\n")
    if isinstance(config, StructuredPruning):
        print(groups_table(report) + "\n")
    acc = report.details["accuracy_before_finetune"]
    print(f"accuracy right after pruning: {100 * acc:.2f}%" + (" (then fine-tuned)\n" if finetune else "\n"))
    print(report.to_table())
    print(f"\nmodel: {report.artifacts['model']}\nreport: {out / 'report.json'}")
    return 0
