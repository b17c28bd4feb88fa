"""``effdl prune``: prune a saved model, optionally fine-tune it, and print the before/after profile."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.cli.common import (
    add_checkpoint_args,
    add_measure_args,
    claim_out,
    load_trained,
    measure_config,
    non_negative_float,
    parse_options,
)
from effdl.compress import FinetuneConfig, Recipe, compress_model
from effdl.core.errors import ConfigError
from effdl.prune import (
    CRITERIA,
    MagnitudePruneConfig,
    OneShotPruneConfig,
    SparseGPTConfig,
    StructuredPruneConfig,
    WandaConfig,
    groups_table,
    sensitivity_config,
)

__all__ = ["add_prune"]

ONESHOT = {"wanda": WandaConfig, "sparsegpt": SparseGPTConfig}


def add_prune(sub) -> None:
    """Registers the ``prune`` sub-command."""
    p = sub.add_parser(
        "prune",
        help="prune a saved model (structured or unstructured), fine-tune, compare",
        description=(
            "Structured methods (l1, l2, bn_scale, taylor, random) physically remove channels, neurons and attention "
            "heads; 'magnitude' zeroes individual weights; 'wanda' and 'sparsegpt' zero the weights of Linear layers "
            "in one shot from calibration data (unstructured, or N:M with --n-m 2:4). Prints accuracy (perplexity "
            "for language models), parameters, MACs, size and latency before and after."
        ),
    )
    add_checkpoint_args(p)
    p.add_argument(
        "--method", default="l1", choices=[*CRITERIA.names(), "magnitude", *ONESHOT],
        help="channel criterion, or magnitude / wanda / sparsegpt for individual weights (default l1)",
    )  # fmt: skip
    p.add_argument("--n-m", default=None, metavar="N:M",
                   help="keep N of every M consecutive weights (magnitude, wanda, sparsegpt), e.g. 2:4")  # fmt: skip
    p.add_argument("--calibration-batches", type=int, default=8, help="calibration batches (wanda, sparsegpt)")
    p.add_argument("--ratio", type=float, default=None,
                   help="fraction of channels (or weights) removed, in [0, 1) (0.5; 1 - N/M with --n-m)")  # fmt: skip
    p.add_argument("--scope", choices=["layer", "global"], default=None,
                   help="rank within each layer or across layers (default: the method's own, as in the library: "
                   "layer for channels, global for magnitude)")  # fmt: skip
    p.add_argument("--global", dest="scope", action="store_const", const="global", help="same as --scope global")
    p.add_argument("--per-layer", action="append", metavar="NAME=RATIO", help="per-layer ratio (name or regex)")
    p.add_argument("--round-to", type=int, default=1, help="keep a multiple of this many channels per layer")
    p.add_argument("--ignore", action="append", default=[], metavar="NAME", help="keep this layer whole (regex)")
    p.add_argument(
        "--sensitivity",
        type=non_negative_float,
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


def _n_m(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        n, m = (int(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"--n-m takes N:M (N kept of every M weights), got {text!r}; e.g. --n-m 2:4") from None
    return (n, m)


def _config(args: argparse.Namespace) -> StructuredPruneConfig | MagnitudePruneConfig | OneShotPruneConfig:
    per_layer = {k: float(v) for k, v in parse_options(args.per_layer, "--per-layer").items()}
    n_m = _n_m(args.n_m)
    if n_m is not None and args.method not in ("magnitude", *ONESHOT):
        raise ConfigError(f"--n-m applies to magnitude, wanda and sparsegpt, not --method {args.method}")
    ratio = args.ratio if args.ratio is not None else (1 - n_m[0] / n_m[1] if n_m and n_m[1] else 0.5)
    if args.method in ONESHOT:
        if per_layer or args.scope:
            raise ConfigError(f"{args.method} prunes every Linear layer to one ratio; drop --per-layer / --scope")
        return ONESHOT[args.method](ratio=ratio, n_m=n_m, ignore=tuple(args.ignore),
                                    calibration_batches=args.calibration_batches)  # fmt: skip
    fields = {"ratio": ratio, "per_layer": per_layer, "ignore": tuple(args.ignore)}
    if args.scope is not None:
        fields["scope"] = args.scope
    if args.method == "magnitude":
        if n_m is not None:
            fields.update(n_m=n_m, scope=args.scope or "layer")
        return MagnitudePruneConfig(**fields)
    return StructuredPruneConfig(criterion=args.method, round_to=args.round_to, **fields)


def _prune(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    model, data, name = load_trained(args)
    out = Path(args.out or f"runs/prune-{name}")
    with claim_out(args, out, model, data):
        return _prune_into(args, config, model, data, out)


def _prune_into(args: argparse.Namespace, config, model, data, out: Path) -> int:
    sens = None
    if args.sensitivity is not None:
        config, sens = sensitivity_config(model, data, config, args.sensitivity, progress=not args.no_progress)
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
    elif "sparsity" in pruned.details:
        print(f"sparsity of the pruned layers: {100 * pruned.details['sparsity']:.2f}%")
    after = pruned.summary
    figure = (f"perplexity {after.perplexity:.3f}" if after.perplexity
              else f"accuracy {100 * (after.accuracy or 0):.2f}%")  # fmt: skip
    print(f"{figure} right after pruning" + (" (then fine-tuned)\n" if args.finetune_epochs else "\n"))
    print(outcome.report.to_table())
    print(f"\nmodel: {outcome.report.artifacts['final_model']}\nreport: {out / 'report.json'}")
    return 0
