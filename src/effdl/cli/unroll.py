"""``effdl unroll train|eval``: unrolled sparse solvers (LISTA, LISTA-CP, LISTA-CPSS, ALISTA, HyperLISTA) against
ISTA and FISTA."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.cli.common import add_log_flags, positive_int
from effdl.core.table import format_table
from effdl.unroll.hyper import HyperTuneConfig
from effdl.unroll.job import CLASSICAL, LEARNED, eval_report, parse_methods, train_report
from effdl.unroll.problem import SparseProblem
from effdl.unroll.train import UnrollTrainConfig

__all__ = ["add_unroll"]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layers", type=positive_int, default=None,
                   help="learned solvers' layers and ISTA/FISTA iterations (default 16, or the solvers')")  # fmt: skip
    p.add_argument("--lam", type=float, default=0.1, help="LASSO weight of the ISTA/FISTA baselines (default 0.1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_log_flags(p)


def _add_problem(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("problem (default: m=250, n=500, 10%% non-zeros, noiseless)")
    g.add_argument("--m", type=int, default=250, help="measurements")
    g.add_argument("--n", type=int, default=500, help="signal length")
    g.add_argument("--sparsity", type=float, default=0.1, help="probability of a non-zero entry, in (0, 1)")
    g.add_argument("--magnitude", default="gaussian", choices=("gaussian", "uniform", "sign"), help="non-zero values")
    g.add_argument("--snr", type=float, default=None, help="measurement SNR in dB (default: noiseless)")
    g.add_argument("--condition", type=float, default=None, help="condition number of A (ill-conditioned variant)")
    g.add_argument("--problem-seed", type=int, default=0, help="seed of the dictionary A")


def _problem(args: argparse.Namespace) -> SparseProblem:
    return SparseProblem(
        m=args.m,
        n=args.n,
        sparsity=args.sparsity,
        magnitude=args.magnitude,
        snr_db=args.snr,
        condition=args.condition,
        seed=args.problem_seed,
    )


def add_unroll(sub) -> None:
    """Registers ``unroll`` and its sub-commands."""
    unroll = sub.add_parser(
        "unroll",
        help="unrolled sparse solvers (LISTA family, ALISTA, HyperLISTA) vs ISTA/FISTA",
        description="Learned sparse recovery: train or tune unrolled solvers and compare them with ISTA and FISTA.",
    )
    cmds = unroll.add_subparsers(dest="unroll_command", metavar="CMD", required=True)

    p = cmds.add_parser(
        "train",
        help="train/tune solvers and compare them with ISTA/FISTA",
        description=(
            "Train (LISTA, LISTA-CP, LISTA-CPSS, ALISTA) or tune (HyperLISTA) solvers into "
            "OUT/METHOD/model.safetensors, "
            "then compare them with ISTA and FISTA on held-out problems: OUT/report.json, OUT/nmse.png. "
            "--resume skips finished methods and continues an interrupted training."
        ),
    )
    p.add_argument("--method", required=True, help=f"comma-separated, or all: {', '.join(LEARNED)}")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT")
    _add_problem(p)
    g = p.add_argument_group("training")
    g.add_argument("--schedule", default="layerwise", choices=("layerwise", "joint"), help="default layerwise")
    g.add_argument("--steps", type=int, default=1000, help="most steps per stage, layer-wise (default 1000)")
    g.add_argument("--joint-steps", type=int, default=4000, help="most steps per stage, joint (default 4000)")
    g.add_argument("--patience", type=int, default=250, help="end a stage after N steps without progress (0: never)")
    g.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate of the first stage (default 5e-4)")
    g.add_argument("--batch-size", type=int, default=64, help="problems per step (default 64)")
    g.add_argument("--seed", type=int, default=0, help="seed of the training problems")
    g.add_argument("--no-warm-start", action="store_true", help="start each new layer from ISTA's values")
    g.add_argument("--tune", default="grid", choices=("grid", "bayes"), help="HyperLISTA tuning (default grid)")
    g.add_argument("--tune-samples", type=int, default=500, help="problems HyperLISTA is tuned on")
    p.add_argument("--test-samples", type=int, default=1000, help="held-out problems of the comparison")
    _add_common(p)
    p.set_defaults(func=_train)

    p = cmds.add_parser(
        "eval",
        help="NMSE per layer of saved solvers and ISTA/FISTA on held-out problems",
        description=(
            "Evaluate saved solvers (--checkpoint, --runs) and classical algorithms (--method) on held-out problems of "
            "the solvers' own problem family (the problem flags apply only when no solver is given). --reach also "
            "counts the "
            "ISTA/FISTA iterations that match each learned solver."
        ),
    )
    p.add_argument("--checkpoint", action="append", default=[], help="a solver's model.safetensors (repeatable)")
    p.add_argument("--runs", default=None, help="a folder of `effdl unroll train` (every */model.safetensors)")
    p.add_argument("--method", default="ista,fista", help="classical algorithms to include (default ista,fista)")
    p.add_argument("--samples", type=int, default=1000, help="held-out problems (default 1000)")
    p.add_argument("--reach", action="store_true", help="ISTA/FISTA iterations needed to match each learned solver")
    p.add_argument("--reach-max", type=int, default=10000, help="most ISTA/FISTA iterations tried (default 10000)")
    p.add_argument("--out", default=None, help="write report.json and plots here")
    _add_problem(p)
    _add_common(p)
    p.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
    methods = parse_methods(args.method, LEARNED)
    train = UnrollTrainConfig(
        schedule=args.schedule,
        lr=args.lr,
        steps_per_stage=args.steps,
        joint_steps_per_stage=args.joint_steps,
        patience=args.patience,
        batch_size=args.batch_size,
        seed=args.seed,
        warm_start=not args.no_warm_start,
        progress=not args.no_progress,
    )
    tune = HyperTuneConfig(method=args.tune, samples=args.tune_samples, seed=args.seed, progress=not args.no_progress)
    _, comparison = train_report(
        methods,
        args.out,
        problem=_problem(args),
        layers=args.layers or 16,
        train=train,
        tune=tune,
        lam=args.lam,
        test_samples=args.test_samples,
        resume=args.resume,
    )
    print(f"{comparison.samples} held-out problems:")
    print(comparison.to_table())
    out = Path(args.out)
    print(f"\nplot: {out / 'nmse.png'}\nreport: {out / 'report.json'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    methods = parse_methods(args.method, CLASSICAL) if args.method else []
    report, comparison = eval_report(
        args.out,
        checkpoints=args.checkpoint,
        runs=args.runs,
        methods=methods,
        problem=None if args.checkpoint or args.runs else _problem(args),  # solvers carry their own problem
        layers=args.layers,
        lam=args.lam,
        samples=args.samples,
        reach=args.reach,
        reach_max=args.reach_max,
    )
    print(f"{comparison.samples} held-out problems:")
    print(comparison.to_table())
    if "reach" in report.details:
        rows = [
            [r["algorithm"], r["target"], f"{r['target_db']:.1f}",
             r["iterations"] if r["iterations"] is not None else f"> {args.reach_max}",
             f"{r['lam']:g}" if r["lam"] is not None else "-"]
            for r in report.details["reach"]["results"]
        ]  # fmt: skip
        print("\niterations to match each learned solver:")
        print(format_table(rows, ["algorithm", "target", "NMSE (dB)", "iterations", "lam"], align="llrrr"))
    if args.out:
        print(f"\nreport: {Path(args.out) / 'report.json'}")
    return 0
