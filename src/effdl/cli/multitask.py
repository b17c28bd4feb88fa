"""``effdl multitask compare|budget``: single-task models against hard sharing and AdaShare, and label-budget
allocation across tasks, on the embedded scene dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.cli.common import add_log_flags, add_run_args, claim_out, positive_int
from effdl.core.errors import ConfigError
from effdl.core.report import Report
from effdl.data import load_scenes
from effdl.multitask import (
    AdaShareConfig,
    MultiTaskConfig,
    compare_allocations,
    compare_sharing,
    scene_task_specs,
)

__all__ = ["add_multitask"]


def add_multitask(sub) -> None:
    """Registers ``multitask`` and its sub-commands."""
    p = sub.add_parser(
        "multitask",
        help="multi-task learning: AdaShare vs hard sharing vs single-task models; label-budget allocation",
        description=(
            "Multi-task learning on the embedded scene dataset (rendered shapes with segmentation, depth, normals, "
            "edges and counts). `compare` trains one network per task, one hard-sharing network and AdaShare (each "
            "task learns which residual blocks to execute; Sun et al. 2020) and reports per-task metrics, the "
            "multi-task gain, parameters, MACs and the learned sharing pattern (policy.png). `budget` spends a label "
            "budget across tasks with given label costs under fixed strategies and a task-adaptive allocator, "
            "trains on each allocation and reports the multi-task score. Finished models are kept in --out: a rerun "
            "continues."
        ),
    )
    cmds = p.add_subparsers(dest="multitask_command", metavar="CMD", required=True)
    c = cmds.add_parser("compare", help="single-task vs hard sharing vs AdaShare")
    _data_flags(c)
    c.add_argument("--epochs", type=positive_int, default=20, help="training epochs of every model (default 20)")
    c.add_argument("--warmup-epochs", type=int, default=5, help="AdaShare hard-sharing warm-up (default 5)")
    c.add_argument("--policy-epochs", type=positive_int, default=15, help="AdaShare policy learning (default 15)")
    c.add_argument("--sparsity", type=float, default=0.05, help="AdaShare sparsity weight (default 0.05)")
    c.add_argument("--sharing", type=float, default=0.05, help="AdaShare sharing weight (default 0.05)")
    c.set_defaults(func=_compare)
    b = cmds.add_parser("budget", help="allocate a label budget across tasks and train on each allocation")
    _data_flags(b)
    b.add_argument("--costs", default="segment=4,depth=2,normal=2,edge=1,count=0.5",
                   help="label cost per task, TASK=COST,... (default segment=4,depth=2,normal=2,edge=1,count=0.5)")
    b.add_argument("--budget", type=float, default=None,
                   help="total budget (default: what labelling 10%% of the pool for every task costs)")  # fmt: skip
    b.add_argument("--steps", type=positive_int, default=600, help="training steps per allocation (default 600)")
    b.add_argument("--val", type=positive_int, default=500,
                   help="validation scenes that score the adaptive allocator's pilot runs (default 500)")
    b.add_argument("--pilot-share", type=float, default=0.25,
                   help="the adaptive pilot's base allocation: this share of the budget at uniform cost; the pilot "
                        "buys twice that (default 0.25)")  # fmt: skip
    b.set_defaults(func=_budget)


def _data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", type=positive_int, default=2000, help="training images (default 2000)")
    p.add_argument("--test", type=positive_int, default=1000, help="test images (default 1000)")
    p.add_argument("--size", type=positive_int, default=24, help="image side in pixels (default 24)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, weights and batches")
    add_run_args(p, out_help="output folder (models' figures, report.json, pictures)")
    add_log_flags(p)


def _scenes(args: argparse.Namespace, val: int = 1):
    return load_scenes(train=args.train, val=val, test=args.test, size=args.size, seed=args.seed)


def _compare(args: argparse.Namespace) -> int:
    scenes, specs = _scenes(args), scene_task_specs()
    config = MultiTaskConfig(epochs=args.epochs, seed=args.seed)
    ada = AdaShareConfig(warmup_epochs=args.warmup_epochs, policy_epochs=args.policy_epochs,
                         retrain_epochs=args.epochs, sparsity=args.sparsity, sharing=args.sharing)  # fmt: skip
    out = Path(args.out)
    with claim_out(args, out, command="multitask compare"):
        result = compare_sharing(scenes.train.dataset(), scenes.test.dataset(), specs, config, ada, out_dir=out,
                                 resume=args.resume, progress=not args.no_progress)  # fmt: skip
        plot = result.plot(out / "policy.png")
        Report(command="multitask compare", model="MultiTaskNet", dataset=scenes.describe(),
               config={"train": config.to_dict(), "adashare": ada.to_dict()}, details=result.to_dict(),
               artifacts={"policy": plot.name}).write(out)  # fmt: skip
    print(scenes.describe())
    print(result.to_table())
    print("\nAdaShare policy (x executed, . skipped; select probability):")
    print(result.policy_table())
    print(f"\nreport: {out / 'report.json'}; sharing pattern: {plot}")
    return 0


def _parse_costs(text: str, tasks: tuple[str, ...]) -> dict[str, float]:
    costs = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            costs[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--costs takes TASK=COST pairs like segment=4,count=0.5; got {part!r}") from None
    missing, unknown = set(tasks) - set(costs), set(costs) - set(tasks)
    if missing or unknown:
        raise ConfigError(f"--costs must give a cost for each task ({', '.join(tasks)}); missing "
                          f"{sorted(missing) or 'none'}, unknown {sorted(unknown) or 'none'}")  # fmt: skip
    return costs


def _budget(args: argparse.Namespace) -> int:
    specs = scene_task_specs()
    costs = _parse_costs(args.costs, tuple(specs))
    scenes = _scenes(args, val=args.val)
    budget = args.budget if args.budget is not None else 0.1 * args.train * sum(costs.values())
    out = Path(args.out)
    with claim_out(args, out, command="multitask budget"):
        result = compare_allocations(scenes.train.dataset(), scenes.val.dataset(), scenes.test.dataset(), specs,
                                     costs, budget, MultiTaskConfig(seed=args.seed), steps=args.steps,
                                     pilot_share=args.pilot_share, out_dir=out,
                                     progress=not args.no_progress)  # fmt: skip
        config = {"costs": costs, "budget": budget, "steps": args.steps, "pilot_share": args.pilot_share}
        Report(command="multitask budget", model="MultiTaskNet", dataset=scenes.describe(), config=config,
               details=result.to_dict()).write(out)  # fmt: skip
    print(f"{scenes.describe()}; budget {budget:g}, label costs {costs}")
    print(result.to_table())
    pilot = result.pilot
    print(f"\nscore: multi-task gain against a network trained with every label of the pool; best fixed strategy: "
          f"{result.best_fixed()}")
    print("adaptive pilot (validation scenes), per task: labels base -> grown, multi-task gain +- noise -> "
          "shrunk gain: " + ", ".join(f"{t} {pilot['base'][t]} -> {pilot['grown'][t]}, {g:+.2f}% +- "
                                      f"{(pilot['noise'] or {}).get(t, 0.0):.2f} -> {pilot['shrunk'][t]:+.2f}%"
                                      for t, g in pilot["gains"].items()))  # fmt: skip
    print(f"report: {out / 'report.json'}")
    return 0
