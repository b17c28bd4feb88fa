"""``effdl landscape`` and ``effdl sharpness``: the loss landscape and sharpness of a saved model."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.analysis import LandscapeConfig, SharpnessConfig, landscape_report, sharpness_report
from effdl.cli.common import add_checkpoint_args, add_scale_args, load_trained
from effdl.core.errors import ConfigError
from effdl.core.table import format_table
from effdl.models import load_model

__all__ = ["add_landscape", "add_sharpness"]


def _span(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH like -1,1, got {text!r}") from exc
    return low, high




def add_landscape(sub) -> None:
    """Registers the ``landscape`` sub-command."""
    p = sub.add_parser(
        "landscape",
        help="loss landscape: 1D/2D surfaces along filter-normalized directions, interpolation, trajectories",
        description=(
            "Evaluates loss and accuracy on a grid around the model's weights along random filter-normalized "
            "directions (Li et al. 2018), along the line to a second model (--interpolate), or over the PCA plane "
            "of an optimization path (--trajectory, snapshots from `effdl train --snapshot-every N`). Writes "
            "surface.npz/.json, the directions, plots and report.json into --out; --resume continues a killed run."
        ),
    )
    add_checkpoint_args(p)
    p.add_argument("--dims", type=int, choices=(1, 2), default=None, help="1 or 2 (default 2; 1 with --interpolate)")
    p.add_argument("--resolution", type=int, default=21, help="grid points per axis (default 21; >= 2)")
    p.add_argument("--range", dest="xrange", type=_span, default=None, metavar="LOW,HIGH",
                   help="coordinates along direction 1 (default -1,1; -0.5,1.5 with --interpolate)")  # fmt: skip
    p.add_argument("--yrange", type=_span, default=None, metavar="LOW,HIGH", help="along direction 2 (default -1,1)")
    p.add_argument("--norm", default="filter", choices=("filter", "layer", "none"), help="default filter")
    p.add_argument("--ignore", default="biasbn", choices=("biasbn", "none"),
                   help="biasbn keeps biases and BatchNorm parameters fixed (default)")  # fmt: skip
    p.add_argument("--no-orthogonal", action="store_true", help="do not orthogonalize the second direction")
    p.add_argument("--splits", default="train,test", help="data splits to evaluate (default train,test)")
    p.add_argument("--max-examples", type=int, default=None, help="examples per split (default all)")
    p.add_argument("--batch-size", type=int, default=1000, help="evaluation batch size (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    add_scale_args(p, workers="evaluate in this many processes, or Ray CPUs started here (default 1)")
    p.add_argument("--convexity", type=int, default=0, metavar="STEPS",
                   help="also map |lambda_min/lambda_max| with STEPS Lanczos steps per point (slow)")  # fmt: skip
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--interpolate", metavar="CHECKPOINT", help="1D interpolation from --checkpoint to this model")
    mode.add_argument("--trajectory", nargs="+", metavar="CHECKPOINT",
                      help="snapshots along training (files or a folder of them), for PCA directions")  # fmt: skip
    p.add_argument("--out", default=None, help="output folder (default runs/landscape-MODEL)")
    p.add_argument("--resume", action="store_true", help="continue a partly computed grid in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_landscape)


def _snapshot_files(items: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in items:
        path = Path(item)
        files.extend(sorted(path.glob("*.safetensors")) if path.is_dir() else [path])
    if len(files) < 2:
        raise ConfigError(f"--trajectory needs at least 2 snapshot files, found {len(files)} in {items}")
    return files


def _landscape(args: argparse.Namespace) -> int:
    model, data, name = load_trained(args)
    dims = args.dims or (1 if args.interpolate else 2)
    default_x = (-0.5, 1.5) if args.interpolate else (-1.0, 1.0)
    config = LandscapeConfig(
        dims=dims,
        resolution=args.resolution,
        xrange=args.xrange or default_x,
        yrange=args.yrange or (-1.0, 1.0),
        norm=args.norm,
        ignore=args.ignore,
        orthogonal=not args.no_orthogonal,
        splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()),
        max_examples=args.max_examples,
        batch_size=args.batch_size,
        seed=args.seed,
        workers=args.workers,
        backend=args.backend,
        address=args.ray_address,
        convexity=args.convexity,
        progress=not args.no_progress,
    )
    other = load_model(args.interpolate, model=args.model, trust_pickle=args.trust_pickle) if args.interpolate else None
    snapshots = None
    if args.trajectory:
        files = _snapshot_files(args.trajectory)
        snapshots = [load_model(f, model=args.model, trust_pickle=args.trust_pickle).state_dict() for f in files]
        print(f"trajectory: {len(files)} snapshots from {files[0]} to {files[-1]}")
    out = Path(args.out or f"runs/landscape-{name}")
    surface, report = landscape_report(
        model,
        data,
        config,
        out_dir=out,
        other=other,
        snapshots=snapshots,
        resume=args.resume,
        model_name=name,
        dataset=data.name,
    )
    d = report.details
    print(f"{report.config['mode']} surface, {d['points']} points in {d['seconds']:.1f} s")
    rows = []
    for key in surface.values:
        v = d[key]
        fmt = (lambda x: f"{100 * x:.2f}%") if key.endswith("accuracy") else (lambda x: f"{x:.4g}")
        rows.append([key, *("-" if v[k] is None else fmt(v[k]) for k in ("at_origin", "min", "max"))])
    origin = "at 0 (model A)" if surface.kind == "interpolation" else "at the weights"
    print(format_table(rows, ["metric", origin, "min on grid", "max on grid"], align="lrrr"))
    for split in config.splits:
        if d.get(f"{split}/curvature") is not None:
            print(f"{split} loss curvature at the weights: {d[f'{split}/curvature']:.4g}")
    if "explained_variance" in d:
        print(f"PCA: the two directions explain {', '.join(f'{100 * v:.1f}%' for v in d['explained_variance'])}")
    print("\n" + "\n".join(f"{k}: {out / v}" for k, v in report.artifacts.items()))
    print(f"report: {out / 'report.json'}")
    return 0


def add_sharpness(sub) -> None:
    """Registers the ``sharpness`` sub-command."""
    p = sub.add_parser(
        "sharpness",
        help="sharpness of a minimum: Hessian eigenvalues and trace, epsilon-sharpness",
        description=(
            "Top Hessian eigenvalues (Lanczos or power iteration on Hessian-vector products), the smallest one and "
            "|lambda_min/lambda_max|, the Hessian trace (Hutchinson) and epsilon-sharpness (Keskar et al. 2017) of "
            "the loss at the saved weights."
        ),
    )
    add_checkpoint_args(p)
    p.add_argument("--split", default="train", help="data split (default train)")
    p.add_argument("--top-k", type=int, default=3, help="largest eigenvalues to report (default 3)")
    p.add_argument("--method", default="lanczos", choices=("lanczos", "power"), help="default lanczos")
    p.add_argument("--iterations", type=int, default=30, help="Lanczos steps / power iterations (default 30)")
    p.add_argument("--trace-samples", type=int, default=16, help="Hutchinson samples, 0 skips (default 16)")
    p.add_argument("--epsilon", type=float, default=1e-3, help="epsilon-sharpness box, 0 skips (default 1e-3)")
    p.add_argument("--ascent-steps", type=int, default=10, help="gradient-ascent steps in the box (default 10)")
    p.add_argument("--max-examples", type=int, default=2000, help="examples of the split used (default 2000)")
    p.add_argument("--batch-size", type=int, default=500, help="batch size (default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random vectors")
    p.add_argument("--out", default=None, help="write report.json here")
    p.set_defaults(func=_sharpness)


def _sharpness(args: argparse.Namespace) -> int:
    config = SharpnessConfig(
        top_k=args.top_k,
        method=args.method,
        iterations=args.iterations,
        trace_samples=args.trace_samples,
        epsilon=args.epsilon,
        ascent_steps=args.ascent_steps,
        split=args.split,
        max_examples=args.max_examples,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    model, data, name = load_trained(args)
    report = sharpness_report(model, data, config, model_name=name, dataset=data.name)
    d = report.details
    rows = [
        [f"{d['split']} loss ({d['examples']} examples)", f"{d['loss']:.4f}"],
        ["accuracy", "-" if d["accuracy"] is None else f"{100 * d['accuracy']:.2f}%"],
        ["top Hessian eigenvalues", ", ".join(f"{v:.4g}" for v in d["top_eigenvalues"])],
        ["smallest eigenvalue", f"{d['lambda_min']:.4g}"],
        ["|lambda_min / lambda_max|", f"{d['eigen_ratio']:.4g}"],
    ]
    if "hessian_trace" in d:
        rows.append(["Hessian trace (Hutchinson)", f"{d['hessian_trace']:.4g}"])
    if "epsilon_sharpness" in d:
        rows.append([f"epsilon-sharpness (eps={config.epsilon:g})", f"{d['epsilon_sharpness']:.4g}"])
    rows.append(["weight norm", f"{d['weight_norm']:.4g}"])
    print(f"{name} on {data.name}:")
    print(format_table(rows, ["measure", "value"], align="lr"))
    if args.out:
        report.write(args.out)
        print(f"\nreport: {Path(args.out) / 'report.json'}")
    return 0
