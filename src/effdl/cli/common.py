"""Argument helpers shared by the commands."""

from __future__ import annotations

import argparse
import os
from typing import Any

from effdl.core.checkpoint import read_metadata, tensors_digest
from effdl.core.errors import ConfigError
from effdl.core.io import load_yaml
from effdl.core.rundir import claim_run_dir, run_identity
from effdl.data import get_dataset
from effdl.measure.summary import MeasureConfig
from effdl.models import load_model, model_spec
from effdl.scale import BACKENDS, ExecutorConfig

__all__ = [
    "add_checkpoint_args",
    "add_data_args",
    "add_log_flags",
    "add_measure_args",
    "add_scale_args",
    "checkpoint_dataset",
    "claim_out",
    "data_options",
    "executor_config",
    "load_trained",
    "measure_config",
    "non_negative_float",
    "parse_options",
    "parse_shape",
    "positive_int",
]


def parse_options(items: list[str] | None, flag: str) -> dict[str, Any]:
    """Turns ``["channels=[16, 16]", "batch_norm=false"]`` into a dict, values parsed as YAML.

    Example:
        >>> parse_options(["channels=[16, 16]", "batch_norm=false"], "--model-opt")
        {'channels': [16, 16], 'batch_norm': False}
    """
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} takes KEY=VALUE, got {item!r}; e.g. {flag} channels=[16,16]")
        options[key.strip()] = load_yaml(value, what=f"{flag} {key.strip()}")
    return options


def positive_int(text: str) -> int:
    """argparse type of counts that must be at least 1 (0 or a negative number is never a silent "off").

    Example:
        >>> positive_int("3")
        3
        >>> positive_int("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a positive integer, got 0
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type of tolerances and amounts that must be finite and at least 0.

    Example:
        >>> non_negative_float("-1")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a finite number >= 0, got -1.0
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}") from None
    if not (0.0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {value}")
    return value


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,40"`` -> ``(1, 40)``.

    Example:
        >>> parse_shape("3, 32, 32")
        (3, 32, 32)
    """
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise ConfigError(f"--input-shape takes positive integers like 1,40 or 3,32,32 (no batch), got {text!r}")
    return shape


def add_log_flags(parser: argparse.ArgumentParser) -> None:
    """Adds ``-v/--verbose`` and ``-q/--quiet`` to a (sub-)command, so they work after its name too."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only warnings and errors"
    )


def add_run_args(parser: argparse.ArgumentParser, *, out_help: str = "output folder") -> None:
    """``--out`` (required), ``--resume``, ``--restart`` and ``--no-progress``: the flags of a command that owns its
    output folder (see :func:`claim_out`)."""
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--restart", action="store_true", help="discard an earlier run in --out and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_data_args(parser: argparse.ArgumentParser, *, default: str | None) -> None:
    """``--data`` and ``--data-root``."""
    parser.add_argument(
        "--data",
        default=default,
        help="dataset name (see `effdl datasets`)" + (f"; default {default}" if default else ""),
    )
    parser.add_argument("--data-root", default=None, help="folder of the dataset files (mnist, fashion-mnist, cifar10)")
    parser.add_argument(
        "--data-opt", action="append", metavar="KEY=VALUE", help="dataset option, repeatable (e.g. num_samples=20000)"
    )


def add_checkpoint_args(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--model``, the dataset flags and ``--trust-pickle``: a trained model and its data."""
    parser.add_argument("--checkpoint", required=True, help="trained model file (.safetensors)")
    parser.add_argument("--model", default=None, help="model name, for checkpoints without a saved spec")
    add_data_args(parser, default=None)
    parser.add_argument(
        "--trust-pickle", action="store_true", help="accept a torch.save pickle (loaded tensors-only)"
    )


def load_trained(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The model, its dataset (``--data`` or the one the checkpoint records) and its name, from the flags of
    :func:`add_checkpoint_args`."""
    model = load_model(args.checkpoint, model=args.model, trust_pickle=args.trust_pickle)
    data = get_dataset(args.data or checkpoint_dataset(args.checkpoint), **data_options(args))
    return model, data, (model_spec(model) or {}).get("name", args.model or "model")


def add_measure_args(parser: argparse.ArgumentParser) -> None:
    """Latency measurement options."""
    parser.add_argument("--batch-size", type=int, default=1, help="batch size of the latency measurement (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while timing (default: all)")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs (default 50)")


def measure_config(args: argparse.Namespace) -> MeasureConfig:
    """The :class:`~effdl.measure.MeasureConfig` of ``--batch-size``, ``--threads`` and ``--repeats``."""
    return MeasureConfig(batch_size=args.batch_size, threads=args.threads, repeats=args.repeats)


def add_scale_args(parser: argparse.ArgumentParser, *, workers: str) -> None:
    """``--backend``, ``--ray-address``, ``--workers`` and ``--cpus-per-unit``: where the units of work run."""
    parser.add_argument("--backend", default="local", choices=BACKENDS,
                        help="local (this machine) or ray (Ray tasks and Tune trials; pip install 'effdl[ray]')")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="Ray cluster to join, e.g. 127.0.0.1:6379 (default $RAY_ADDRESS, else start Ray here)")
    parser.add_argument("--workers", type=positive_int, default=1, help=workers)
    parser.add_argument("--cpus-per-unit", type=float, default=1.0, help="CPUs Ray reserves per unit (default 1)")


def executor_config(args: argparse.Namespace) -> ExecutorConfig:
    """The :class:`~effdl.scale.ExecutorConfig` of the flags of :func:`add_scale_args`."""
    return ExecutorConfig(backend=args.backend, workers=args.workers, address=args.ray_address,
                          cpus_per_unit=args.cpus_per_unit)  # fmt: skip


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for get_dataset from the parsed flags."""
    options = parse_options(args.data_opt, "--data-opt")
    if args.data_root:
        options["root"] = args.data_root
    return options


def checkpoint_dataset(path: str) -> str:
    """The dataset a checkpoint records (``--data`` is needed when it records none)."""
    try:
        name = read_metadata(path).get("dataset")
    except Exception:  # noqa: BLE001 - a pickle file has no metadata; fall through to the clear error below
        name = None
    if not name:
        raise ConfigError(f"{path} does not record its dataset; pass --data NAME (see `effdl datasets`)")
    return name


#: flags that do not change what a run computes (a resumed run may differ in them)
_NOT_IDENTITY = {"func", "argv", "command", "resume", "restart", "out", "no_progress", "verbose", "quiet", "threads",
                 "repeats", "trust_pickle", "data_root"}  # fmt: skip


def claim_out(args: argparse.Namespace, out: str | os.PathLike, model: Any = None, data: Any = None, *,
              command: str | None = None):  # fmt: skip
    """Claims ``out`` for this command (:func:`~effdl.core.rundir.claim_run_dir`; ``--resume`` continues,
    ``--restart`` replaces): the identity is the command's flags, the input model's weights and the data.
    ``command`` names a sub-command (default ``args.command``), so e.g. two kinds of training never share a folder."""
    options = {k: v for k, v in vars(args).items() if k not in _NOT_IDENTITY and not callable(v)}
    identity = run_identity(
        options=options,
        model=tensors_digest(model.state_dict()) if model is not None else None,
        data=data.fingerprint() if data is not None else None,
    )
    resume, restart = bool(getattr(args, "resume", False)), bool(getattr(args, "restart", False))
    return claim_run_dir(out, command=command or args.command, identity=identity, resume=resume, restart=restart)
