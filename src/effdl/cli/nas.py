"""``effdl nas score|eval|search|train``: zero-cost proxies, their rank correlation with trained accuracy,
proxy-guided search, and training architectures (a ground truth) locally or on Ray."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from effdl.cli.common import (
    add_log_flags,
    add_scale_args,
    claim_out,
    data_options,
    executor_config,
    positive_int,
)
from effdl.core.errors import ConfigError
from effdl.core.io import atomic_write_json
from effdl.core.report import Report
from effdl.core.table import format_table
from effdl.data import get_dataset
from effdl.measure import stack_batches
from effdl.models import load_model
from effdl.nas import PROXIES, SPACES, SearchConfig, evaluate_proxies, get_space, load_ground_truth, score_model
from effdl.nas.ground_truth import GroundTruthConfig, sample_codes, train_architectures
from effdl.nas.search import search_architectures
from effdl.train import TrainConfig, Trainer, evaluate

__all__ = ["add_nas"]


def _proxies(text: str) -> list[str]:
    names = PROXIES.names() if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    for n in names:
        PROXIES.entry(n)  # an unknown name lists the valid ones
    return names


def _batches(dataset: str, args: argparse.Namespace) -> list[tuple]:
    data = get_dataset(dataset, **data_options(args))
    batches = stack_batches(data.train, args.batch_size, max_examples=args.batches * args.batch_size)
    if len(batches) < args.batches:
        raise ConfigError(f"{dataset} has too few training examples for {args.batches} batches of {args.batch_size}")
    return batches


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=64, help="examples per mini-batch (default 64)")
    p.add_argument("--batches", type=int, default=2, help="mini-batches the proxies see (default 2; ZiCo needs 2+)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights the architectures are scored at")
    add_log_flags(p)
    p.add_argument("--data-root", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data-opt", action="append", metavar="KEY=VALUE", help=argparse.SUPPRESS)


def add_nas(sub) -> None:
    """Registers ``nas`` and its sub-commands."""
    nas = sub.add_parser(
        "nas",
        help="zero-cost NAS: score architectures, evaluate proxies, search under a budget",
        description="Zero-cost neural architecture search (ZiCo and the usual proxies). See `effdl nas CMD --help`.",
    )
    cmds = nas.add_subparsers(dest="nas_command", metavar="CMD", required=True)

    p = cmds.add_parser("score", help="score one architecture (or a saved model) with proxies")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--arch", help="an encoding like c16-32_k5-3_s1-2_r1 of --space")
    src.add_argument("--checkpoint", help="a saved model (scored at its saved weights)")
    p.add_argument("--space", default="mnist1d_cnn", help=f"search space: {', '.join(SPACES.names())}")
    p.add_argument("--data", default=None, help="dataset of the batches (default: the space's)")
    p.add_argument("--proxies", default="all", help=f"comma-separated or all: {', '.join(PROXIES.names())}")
    _add_common(p)
    p.set_defaults(func=_score)

    p = cmds.add_parser("eval", help="rank correlation of proxies with trained accuracy (committed ground truth)")
    p.add_argument("--ground-truth", default=None, help="ground-truth JSON (default: effdl's mnist1d_cnn_v1)")
    p.add_argument("--proxies", default="all", help="comma-separated or all")
    p.add_argument("--bands", type=int, default=3, help="MAC bands (quantiles) for within-band correlations")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N architectures (quick look)")
    p.add_argument("--out", default="runs/nas-eval", help="output folder (default runs/nas-eval)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_common(p)
    p.set_defaults(func=_eval)

    p = cmds.add_parser("search", help="search for the best-scoring architecture under a MAC/latency budget")
    p.add_argument("--space", default="mnist1d_cnn", help=f"search space: {', '.join(SPACES.names())}")
    p.add_argument("--proxy", default="zico", help="proxy to maximize (default zico)")
    p.add_argument("--method", default="evolution", choices=("evolution", "random"))
    p.add_argument("--budget-macs", type=int, default=None, help="at most this many MACs per example")
    p.add_argument("--budget-latency-ms", type=float, default=None, help="at most this batch-1 CPU latency")
    p.add_argument("--samples", type=int, default=200, help="architectures to score (default 200)")
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds of search at most (default 300)")
    p.add_argument("--top-k", type=int, default=5, help="best architectures to list")
    p.add_argument("--train-winner", action="store_true",
                   help="train the best one with the ground truth's recipe and report its accuracy")  # fmt: skip
    p.add_argument("--epochs", type=int, default=10, help="training epochs of the winner (default 10)")
    p.add_argument("--out", default=None, help="write report.json here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_common(p)
    p.set_defaults(func=_search)

    p = cmds.add_parser(
        "train",
        help="train architectures with the ground truth's recipe (locally or on Ray; resumable)",
        description=(
            "Trains each architecture (given, or sampled from --space) with the committed ground truth's recipe and "
            "lists its accuracies; finished ones are kept in OUT, so a run stopped half-way continues. With "
            "--scheduler asha (Ray Tune), architectures whose training accuracy lags are stopped early."
        ),
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", nargs="+", help="architecture encodings, e.g. c16-32_k5-3_s1-2_r1")
    which.add_argument("--count", type=positive_int, help="sample this many architectures of --space (with --seed)")
    p.add_argument("--space", default="mnist1d_cnn", help=f"search space: {', '.join(SPACES.names())}")
    p.add_argument("--epochs", type=positive_int, default=10, help="training epochs (default 10, the ground truth's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample (weights are seeded as in the ground truth)")
    p.add_argument("--scheduler", default="fifo", choices=("fifo", "asha"), help="asha: stop laggards (Ray only)")
    p.add_argument("--out", default="runs/nas-train", help="output folder (default runs/nas-train)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_scale_args(p, workers="architectures at once: processes, or Ray CPUs started here (default 1)")
    add_log_flags(p)
    p.set_defaults(func=_train)


def _score(args: argparse.Namespace) -> int:
    space = get_space(args.space)
    if args.arch:
        torch.manual_seed(args.seed)
        model, label = space.build(args.arch), args.arch
    else:
        model, label = load_model(args.checkpoint), args.checkpoint
    batches = _batches(args.data or space.dataset, args)
    rows = [[n, f"{score_model(model, batches, n):.6g}"] for n in _proxies(args.proxies)]
    print(f"{label}:")
    print(format_table(rows, ["proxy", "score"], align="lr"))
    return 0


def _eval(args: argparse.Namespace) -> int:
    gt = load_ground_truth(args.ground_truth)
    if args.limit:
        gt.records = gt.records[: args.limit]
    space = get_space(gt.space)
    batches = _batches(space.dataset, args)
    out = Path(args.out)
    with claim_out(args, out):  # claimed before the work: a busy or foreign folder is refused at once
        ev = evaluate_proxies(gt, batches, proxies=_proxies(args.proxies), num_bands=args.bands, seed=args.seed,
                              progress=not args.no_progress)  # fmt: skip
        plot = ev.plot(out / "scatter.png")
        report = Report(
            command="nas eval",
            dataset=space.dataset,
            config={"ground_truth": gt.name, "batch_size": args.batch_size, "batches": args.batches, "seed": args.seed},
            details=ev.to_dict(),
            artifacts={"scatter": plot.name},
        )
        report.write(out)
    print(f"{len(gt.records)} architectures of {gt.space} ({gt.name}):")
    print(ev.to_table())
    print(f"\nscatter plots: {plot}\nreport: {out / 'report.json'}")
    return 0


def _search(args: argparse.Namespace) -> int:
    config = SearchConfig(
        proxy=args.proxy,
        method=args.method,
        budget_macs=args.budget_macs,
        budget_latency_ms=args.budget_latency_ms,
        samples=args.samples,
        time_limit_s=args.time_limit,
        top_k=args.top_k,
        seed=args.seed,
        init_seed=args.seed,
    )
    space = get_space(args.space)
    batches = _batches(space.dataset, args)
    data = get_dataset(space.dataset, **data_options(args))

    # the committed ground truth's recipe, so a trained winner compares with its accuracies
    recipe = {**load_ground_truth().meta["recipe"], "epochs": args.epochs, "seed": args.seed}

    def train(model: torch.nn.Module) -> float:
        cfg = TrainConfig(**recipe, progress=not args.no_progress, eval_every=args.epochs)
        Trainer(model, cfg).fit(data.train)
        return evaluate(model, data.test)["accuracy"]

    result = search_architectures(
        space, batches, config, train_fn=train if args.train_winner else None, progress=not args.no_progress
    )
    print(
        f"scored {result.scored} architectures in {result.seconds:.1f} s ({result.rejected} over budget); "
        f"best by {config.proxy}:"
    )
    print(result.to_table())
    winner = result.best[0]
    if winner.accuracy is not None and math.isfinite(winner.accuracy):
        print(f"\nwinner {winner.arch} trained for {args.epochs} epochs: {100 * winner.accuracy:.2f}% test accuracy")
    if args.out:
        Report(command="nas search", dataset=space.dataset, config=config.to_dict(), details=result.to_dict()).write(
            args.out
        )
        print(f"report: {Path(args.out) / 'report.json'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    codes = args.arch or sample_codes(args.space, args.count, args.seed)
    config = GroundTruthConfig(space=args.space, recipe={"epochs": args.epochs}, scheduler=args.scheduler)
    out = Path(args.out)
    result = train_architectures(codes, config, executor=executor_config(args), out_dir=out,
                                 progress=not args.no_progress)  # fmt: skip
    rows = [
        [r["arch"], "-" if "test_accuracy" not in r else f"{100 * r['test_accuracy']:.2f}%",
         f"{100 * r['train_accuracy']:.2f}%", r.get("epochs", r.get("epoch", "")),
         "stopped early" if r.get("stopped_early") else ""]
        for r in result.records
    ]  # fmt: skip
    print(format_table(rows, ["architecture", "test accuracy", "train accuracy", "epochs", ""], align="lrrrl"))
    atomic_write_json(out / "architectures.json", {"config": config.to_dict(), "records": result.records,
                                                   "failures": [f.to_dict() for f in result.failures]})  # fmt: skip
    print(f"\n{len(result.records)} trained; records: {out / 'architectures.json'}")
    for f in result.failures:
        print(f"failed: {f.key}: {f.error}")
    return 1 if result.failures else 0
