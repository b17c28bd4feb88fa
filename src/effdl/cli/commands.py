"""The sub-commands: each registers its arguments and calls the public API."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from effdl.cli.adaptive import add_adaptive as _add_adaptive
from effdl.cli.analysis import add_landscape as _add_landscape
from effdl.cli.analysis import add_sharpness as _add_sharpness
from effdl.cli.common import (
    add_checkpoint_args,
    add_data_args,
    add_measure_args,
    data_options,
    load_trained,
    measure_config,
    parse_options,
    parse_shape,
    positive_int,
)
from effdl.cli.compress import add_compress as _add_compress
from effdl.cli.compress import add_sweep as _add_sweep
from effdl.cli.federated import add_federated as _add_federated
from effdl.cli.fewshot import add_fewshot as _add_fewshot
from effdl.cli.multitask import add_multitask as _add_multitask
from effdl.cli.nas import add_nas as _add_nas
from effdl.cli.prune import add_prune as _add_prune
from effdl.cli.quantize import add_quantize as _add_quantize
from effdl.cli.unlearn import add_unlearn as _add_unlearn
from effdl.cli.unroll import add_unroll as _add_unroll
from effdl.core.errors import ConfigError
from effdl.core.process import die_with_parent
from effdl.core.report import Report
from effdl.core.table import format_table, human_count
from effdl.data import get_dataset, list_datasets
from effdl.measure import Profile, profile, summarize
from effdl.models import create_model, list_models, load_model, model_spec
from effdl.train import Snapshots, default_train_config, train_model
from effdl.train.config import OPTIMIZERS, SCHEDULES

__all__ = ["REGISTER"]


def _print_report(report: Report, out: str | None) -> None:
    print(report.to_table())
    if out:
        print(f"\nreport: {Path(out) / 'report.json'}")


# ---------------------------------------------------------------- train
def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a dataset",
        description=(
            "Train a registered model. Settings default to the model's recommended ones (see `effdl models`); "
            "flags override them. With --out, writes model.safetensors, metrics.csv, report.json and a resumable "
            "checkpoint; --resume continues a killed run with bit-identical results."
        ),
    )
    p.add_argument("--model", required=True, help="model name (see `effdl models`)")
    add_data_args(p, default="mnist1d")
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE", help="architecture option, repeatable")
    p.add_argument("--out", default=None, help="output folder (default runs/MODEL-DATA)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.safetensors")
    for flag, typ, text in [
        ("--epochs", int, "epochs"),
        ("--batch-size", int, "batch size per process"),
        ("--lr", float, "peak learning rate"),
        ("--weight-decay", float, "weight decay"),
        ("--momentum", float, "SGD momentum"),
        ("--label-smoothing", float, "label smoothing"),
        ("--grad-clip", float, "clip the gradient norm"),
        ("--seed", int, "random seed"),
        ("--checkpoint-every-steps", int, "also checkpoint every N steps"),
    ]:
        p.add_argument(flag, type=typ, default=None, help=text)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="default: the model's (mostly adamw)")
    p.add_argument("--schedule", choices=SCHEDULES, default=None, help="learning-rate schedule (default cosine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--tensorboard", action="store_true", help="also log to OUT/tensorboard")
    p.add_argument("--snapshot-every", type=positive_int, default=None, metavar="N",
                   help="save weights every N epochs to OUT/snapshots (effdl landscape --trajectory)")  # fmt: skip
    p.add_argument("--nproc", type=positive_int, default=1, help="data-parallel processes (torchrun, gloo); default 1")
    p.add_argument("--profile-batch-size", type=int, default=1, help="batch size of the final latency measurement")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the final latency measurement")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    out = args.out or os.path.join("runs", f"{args.model}-{args.data}")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(args.argv, args.nproc, out)
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a rank started by torchrun: stop when the agent stops
        die_with_parent()
    overrides = {
        k: getattr(args, k)
        for k in (
            "epochs",
            "batch_size",
            "lr",
            "weight_decay",
            "momentum",
            "label_smoothing",
            "grad_clip",
            "seed",
            "checkpoint_every_steps",
            "optimizer",
            "schedule",
        )
    }
    if args.no_progress:
        overrides["progress"] = False
    config = default_train_config(args.model, **overrides)
    data = get_dataset(args.data, **data_options(args))
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        print(data.describe())
        print(f"training {args.model}: {json.dumps(config.to_dict())}")
    outcome = train_model(
        args.model,
        data,
        config,
        out_dir=out,
        resume=args.resume,
        model_options=parse_options(args.model_opt, "--model-opt"),
        profile_batch_size=args.profile_batch_size,
        threads=args.threads,
        tensorboard=args.tensorboard,
        callbacks=[Snapshots(Path(out) / "snapshots", every=args.snapshot_every)] if args.snapshot_every else None,
    )
    if main:
        print()
        print(Profile.from_dict(outcome.report.details["profile"]))
        print()
        _print_report(outcome.report, out)
        print(f"model: {Path(out) / 'model.safetensors'}")
    return 0


def _launch_torchrun(argv: list[str], nproc: int, out: str) -> int:
    """Re-runs this same command under torchrun with ``nproc`` processes (without --nproc)."""
    cleaned: list[str] = []
    skip = False
    for arg in argv:
        if skip or arg.startswith("--nproc="):
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        cleaned.append(arg)
    if not any(a == "--out" or a.startswith("--out=") for a in cleaned):
        cleaned += ["--out", out]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "effdl", *cleaned]  # fmt: skip
    print("launching: " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, preexec_fn=die_with_parent)  # torchrun (and so its ranks) ends with this process


# ---------------------------------------------------------------- eval
def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a saved model",
        description=("Evaluate a checkpoint on a dataset's test split and profile it."),
    )
    add_checkpoint_args(p)
    add_measure_args(p)
    p.add_argument("--out", default=None, help="write report.json here")
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    model, data, _ = load_trained(args)
    summary, prof = summarize(model, data, measure_config(args))
    spec = model_spec(model) or {}
    report = Report(
        command="eval",
        model=spec.get("name", args.model),
        dataset=data.name,
        summary=summary,
        details={"profile": prof.to_dict()},
        artifacts={"checkpoint": str(args.checkpoint)},
    )
    if args.out:
        report.write(args.out)
    print(f"{data.name} test accuracy {100 * summary.accuracy:.2f}%, loss {summary.loss:.4f}\n")
    _print_report(report, args.out)
    return 0


# ---------------------------------------------------------------- profile
def _add_profile(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="measure params, MACs, size, memory and latency per layer",
        description=(
            "Profile a registered model (fresh weights) or a checkpoint: parameters, non-zeros, MACs, serialized size, "
            "peak forward memory and CPU latency, per layer and in total."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model name (see `effdl models`)")
    src.add_argument("--checkpoint", help="model file to profile")
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE", help="architecture option, repeatable")
    p.add_argument("--input-shape", default=None, help="shape of one example, e.g. 1,40 (default: the model's)")
    add_measure_args(p)
    p.add_argument("--layer-latency", action="store_true", help="also time each layer")
    p.add_argument("--all-layers", action="store_true", help="also list layers without params or MACs")
    p.add_argument("--trust-pickle", action="store_true", help="accept a torch.save pickle (loaded tensors-only)")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.add_argument("--out", default=None, help="write report.json here")
    p.set_defaults(func=_profile)


def _profile(args: argparse.Namespace) -> int:
    import torch

    if args.checkpoint:
        model = load_model(args.checkpoint, trust_pickle=args.trust_pickle)
    else:
        shape = parse_shape(args.input_shape) if args.input_shape else None
        model = create_model(args.model, input_shape=shape, **parse_options(args.model_opt, "--model-opt"))
    spec = model_spec(model) or {}
    shape = parse_shape(args.input_shape) if args.input_shape else tuple(spec.get("input_shape", ()))
    if not shape:
        raise ConfigError("cannot tell the input shape of this model; pass --input-shape, e.g. 1,40")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    x = torch.randn(args.batch_size, *shape, generator=torch.Generator().manual_seed(0))
    prof = profile(model, x, layer_latency=args.layer_latency, threads=args.threads, repeats=args.repeats)
    report = Report(
        command="profile",
        model=spec.get("name", args.model),
        summary=prof.summary(),
        details={"profile": prof.to_dict()},
        artifacts={"checkpoint": str(args.checkpoint)} if args.checkpoint else {},
    )
    if args.out:
        report.write(args.out)
    if args.json:
        print(prof.to_json())
    else:
        print(prof.to_table(all_layers=args.all_layers))
        if args.out:
            print(f"\nreport: {Path(args.out) / 'report.json'}")
    return 0


# ---------------------------------------------------------------- models / datasets
def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the reference models")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_models)


def _models(args: argparse.Namespace) -> int:
    rows = []
    infos = list_models()
    for info in infos:
        info["params"] = sum(p.numel() for p in create_model(info["name"]).parameters())
        rows.append(
            [info["name"], "x".join(map(str, info["input_shape"])), human_count(info["params"]), info["description"]]
        )
    if args.json:
        print(json.dumps(infos, indent=2))
    else:
        print(format_table(rows, ["model", "input", "params", "description"], align="llrl"))
    return 0


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="list the datasets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_datasets)


def _datasets(args: argparse.Namespace) -> int:
    infos = list_datasets()
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    rows = [
        [
            d["name"],
            "x".join(map(str, d["input_shape"])),
            d["num_classes"],
            "local files (--data-root)" if d["needs_files"] else "embedded",
            d["description"],
        ]
        for d in infos
    ]
    print(format_table(rows, ["dataset", "input", "classes", "source", "description"], align="llrll"))
    return 0


REGISTER = [
    _add_train,
    _add_eval,
    _add_profile,
    _add_prune,
    _add_quantize,
    _add_compress,
    _add_sweep,
    _add_landscape,
    _add_sharpness,
    _add_nas,
    _add_unroll,
    _add_unlearn,
    _add_adaptive,
    _add_federated,
    _add_fewshot,
    _add_multitask,
    _add_models,
    _add_datasets,
]
