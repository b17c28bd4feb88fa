"""``effdl compress`` (replay a recipe on a saved model) and ``effdl sweep`` (a grid of recipes, Pareto front)."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.cli.common import (
    add_checkpoint_args,
    add_scale_args,
    executor_config,
    load_trained,
    measure_config,
)
from effdl.compress import Recipe, compress_model, shipped_recipes, sweep
from effdl.compress.target import OBJECTIVES, SEARCH_RUNTIMES, TargetConfig, compress_to_target
from effdl.core.errors import ConfigError
from effdl.core.io import load_yaml

__all__ = ["add_compress", "add_sweep"]


def _common(p: argparse.ArgumentParser, *, optional_recipe: bool = False) -> None:
    what = f"recipe file (YAML/JSON) or a shipped recipe: {', '.join(shipped_recipes())}"
    if optional_recipe:
        p.add_argument("recipe", nargs="?", default=None, help=what + " (or --target instead)")
    else:
        p.add_argument("recipe", help=what)
    add_checkpoint_args(p)
    p.add_argument("--batch-size", type=int, default=32, help="serving batch size: latency and runtime choice (32)")
    p.add_argument("--threads", type=int, default=None, help="torch threads while timing (default: all)")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per stage profile (default 30)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_compress(sub) -> None:
    """Registers the ``compress`` sub-command."""
    p = sub.add_parser(
        "compress",
        help="compress a saved model with a recipe (prune, fine-tune/distil, factorize, QAT, int8)",
        description=(
            "Replays RECIPE's steps on the model, saving and profiling after each. Rerunning the same command "
            "continues after the last finished step (--restart starts over). Writes OUT/report.md, report.json, "
            "pareto.png and the deployable model (with its ONNX form) under OUT/final. With --target instead of a "
            "recipe, searches per-layer pruning ratios and precision for an objective within an accuracy tolerance "
            "(latency measured on this machine), writes the recipe it found to OUT/recipe.yaml, the explored points "
            "to OUT/target.md and front.png, and the final run under OUT/runs/NN. Example: effdl compress --target "
            "latency+size --tolerance 1 --checkpoint model.safetensors"
        ),
    )
    _common(p, optional_recipe=True)
    p.add_argument("--out", default=None, help="output folder (default runs/compress-MODEL-RECIPE)")
    p.add_argument("--restart", action="store_true", help="discard an earlier run in OUT and start over")
    t = p.add_argument_group("compression to a target (instead of a recipe)")
    t.add_argument("--target", metavar="OBJECTIVE[=RATIO]", default=None,
                   help=f"minimise {', '.join(OBJECTIVES)} within --tolerance; with =RATIO (e.g. size=10) stop at that "
                        "ratio to the original with the least accuracy loss")  # fmt: skip
    t.add_argument("--tolerance", type=float, default=1.0,
                   help="accuracy points the result may lose on the test set (default 1.0; -1: no limit, needs =RATIO)")
    t.add_argument("--runtime", choices=SEARCH_RUNTIMES, default="auto", help="runtime timed and targeted (auto)")
    t.add_argument("--max-steps", type=int, default=40, help="search steps at most (40)")
    t.add_argument("--time-budget", type=float, default=None, metavar="SECONDS", help="stop searching after this long")
    t.add_argument("--search-epochs", type=int, default=2, help="fine-tuning epochs of each explored point (2)")
    t.add_argument("--finetune-epochs", type=int, default=10, help="fine-tuning epochs of the final recipe (10)")
    t.add_argument("--final-tries", type=int, default=3, help="candidates replayed in full at most (3)")
    p.set_defaults(func=_compress)


def add_sweep(sub) -> None:
    """Registers the ``sweep`` sub-command."""
    p = sub.add_parser(
        "sweep",
        help="compress with a grid of recipe variants and plot the Pareto front",
        description=(
            "Every combination of the --set values is applied to RECIPE and compressed into OUT/runs/...; "
            "OUT/sweep.md lists accuracy, size and latency of each, marks the Pareto-optimal ones, and "
            "OUT/pareto.png plots them. Example: --set steps.0.ratio=0.25,0.5,0.75"
        ),
    )
    _common(p)
    p.add_argument("--set", action="append", required=True, metavar="FIELD=V1,V2,...", dest="grid",
                   help="recipe field (dot path, e.g. steps.0.ratio) and its values; repeatable")  # fmt: skip
    p.add_argument("--out", default=None, help="output folder (default runs/sweep-MODEL-RECIPE)")
    add_scale_args(p, workers="points at once: processes, or Ray CPUs started here (default 1: one after another)")
    p.set_defaults(func=_sweep)


def _load(args: argparse.Namespace):
    recipe = Recipe.load(args.recipe)
    model, data, name = load_trained(args)
    return recipe, model, data, name, Path(args.recipe).stem


def target_config(args: argparse.Namespace) -> TargetConfig:
    """The :class:`TargetConfig` of ``--target OBJECTIVE[=RATIO]`` and the search options."""
    objective, sep, ratio = args.target.partition("=")
    try:
        value = float(ratio.strip().removesuffix("x")) if sep else None
    except ValueError:
        raise ConfigError(f"--target takes OBJECTIVE or OBJECTIVE=RATIO (e.g. size=10), got {args.target!r}") from None
    tolerance = None if args.tolerance == -1 else args.tolerance
    return TargetConfig(objective=objective.strip(), ratio=value, tolerance=tolerance, runtime=args.runtime,
                        max_steps=args.max_steps, time_budget_s=args.time_budget, search_epochs=args.search_epochs,
                        finetune_epochs=args.finetune_epochs, final_tries=args.final_tries)  # fmt: skip


def _compress(args: argparse.Namespace) -> int:
    if (args.recipe is None) == (args.target is None):
        raise ConfigError("give a recipe or --target OBJECTIVE (not both), e.g. effdl compress default ... or "
                          "effdl compress --target latency+size --tolerance 1 ...")  # fmt: skip
    if args.target is not None:
        return _compress_target(args)
    recipe, model, data, name, tag = _load(args)
    out = Path(args.out or f"runs/compress-{name}-{tag}")
    result = compress_model(model, data, recipe, out_dir=out, restart=args.restart, measure=measure_config(args),
                            progress=not args.no_progress)
    print((out / "report.md").read_text().split("## Deployment")[0].split("\n", 2)[2].strip())
    d = result.deployment
    if d is not None:
        times = ", ".join(f"{k} {v:.3f} ms" for k, v in d.runtimes_ms.items())
        print(f"\ndeployment at batch {d.batch_size}: {d.best} is the fastest ({times})")
        if d.onnx_path:
            print(f"ONNX: {d.onnx_path}" + (f" (same class as PyTorch on {100 * d.agreement:.2f}% of the test set)"
                                            if d.agreement is not None else ""))  # fmt: skip
    print(f"\nreport: {out / 'report.md'} (and report.json); plot: {out / 'pareto.png'}; model: {out / 'final'}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    recipe, model, data, name, tag = _load(args)
    grid = {}
    for item in args.grid:
        field, sep, values = item.partition("=")
        if not sep or not field or not values:
            raise ConfigError(f"--set takes FIELD=V1,V2,..., got {item!r}; e.g. --set steps.0.ratio=0.25,0.5")
        grid[field.strip()] = [load_yaml(v, what=f"--grid {field.strip()}") for v in values.split(",")]
    out = Path(args.out or f"runs/sweep-{name}-{tag}")
    sweep(model, data, recipe, grid, out_dir=out, measure=measure_config(args), executor=executor_config(args),
          progress=not args.no_progress)
    print((out / "sweep.md").read_text().split("![")[0].strip())
    print(f"\nplot: {out / 'pareto.png'}; every run: {out / 'runs'}")
    return 0


def _compress_target(args: argparse.Namespace) -> int:
    target = target_config(args)  # bad settings fail before the model is loaded
    model, data, name = load_trained(args)
    out = Path(args.out or f"runs/compress-{name}-target-{target.objective}")
    result = compress_to_target(model, data, target, out_dir=out, restart=args.restart, measure=measure_config(args),
                                progress=not args.no_progress)  # fmt: skip
    text = (out / "target.md").read_text()
    print(text.split("## Explored points")[0].split("\n", 2)[2].strip())
    print(f"\nsearch: {len(result.points) - 1} steps ({result.stop_reason}); recipe: {out / 'recipe.yaml'}; report: "
          f"{out / 'target.md'}; plot: {out / 'front.png'}; model: {result.details['final_run']}/final")
    return 0
