"""``effdl compress`` (replay a recipe on a saved model) and ``effdl sweep`` (a grid of recipes, Pareto front)."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.cli.common import (
    add_checkpoint_args,
    load_trained,
    measure_config,
)
from effdl.compress import Recipe, compress_model, shipped_recipes, sweep
from effdl.core.errors import ConfigError
from effdl.core.io import load_yaml

__all__ = ["add_compress", "add_sweep"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help=f"recipe file (YAML/JSON) or a shipped recipe: {', '.join(shipped_recipes())}")
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
            "pareto.png and the deployable model (with its ONNX form) under OUT/final."
        ),
    )
    _common(p)
    p.add_argument("--out", default=None, help="output folder (default runs/compress-MODEL-RECIPE)")
    p.add_argument("--restart", action="store_true", help="discard an earlier run in OUT and start over")
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
    p.set_defaults(func=_sweep)


def _load(args: argparse.Namespace):
    recipe = Recipe.load(args.recipe)
    model, data, name = load_trained(args)
    return recipe, model, data, name, Path(args.recipe).stem


def _compress(args: argparse.Namespace) -> int:
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
    sweep(model, data, recipe, grid, out_dir=out, measure=measure_config(args), progress=not args.no_progress)
    print((out / "sweep.md").read_text().split("![")[0].strip())
    print(f"\nplot: {out / 'pareto.png'}; every run: {out / 'runs'}")
    return 0
