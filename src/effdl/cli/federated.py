"""``effdl federated``: federated training with clients that hold only the quantized model (FedAQT) against float
FedAvg and QAT clients, simulated in one process."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.cli.common import add_data_args, data_options, parse_options
from effdl.core.errors import ConfigError
from effdl.data import get_dataset
from effdl.federated import METHODS, FederatedConfig, compare_methods, methods_table
from effdl.models import create_model

__all__ = ["add_federated"]


def add_federated(sub) -> None:
    """Registers the ``federated`` sub-command."""
    p = sub.add_parser(
        "federated",
        help="federated training where clients hold only k-bit weights (FedAQT), against float FedAvg and QAT",
        description=(
            "Splits the training set over --clients (IID or Dirichlet non-IID), then runs --rounds of client sampling, "
            "local SGD and FedAvg for each --method: fedavg (float clients), qat (clients keep a float shadow copy "
            "and train with k-bit fake quantization), fedaqt (clients hold only packed k-bit weights and write each "
            "update back with stochastic rounding; --rounding nearest is the ablation). Prints accuracy, client "
            "memory (exact) and bytes per round; writes report.json and accuracy.png. Resumable by round."
        ),
    )
    add_data_args(p, default="mnist1d")
    p.add_argument("--model", default="cnn1d", help="model name (default cnn1d)")
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE", help="model option, repeatable")
    p.add_argument("--method", action="append", choices=METHODS, default=None,
                   help="repeatable; default: fedavg and fedaqt")  # fmt: skip
    p.add_argument("--bits", type=int, action="append", default=None, help="weight bits of qat/fedaqt (2, 4, 8), "
                   "repeatable (default 8)")  # fmt: skip
    p.add_argument("--rounding", default="stochastic", choices=("stochastic", "nearest"), help="fedaqt rounding")
    p.add_argument("--clients", type=int, default=10, help="clients (default 10)")
    p.add_argument("--clients-per-round", type=int, default=None, help="clients sampled per round (default all)")
    p.add_argument("--rounds", type=int, default=20, help="rounds (default 20)")
    p.add_argument("--local-epochs", type=int, default=1, help="local epochs per round (default 1)")
    p.add_argument("--batch-size", type=int, default=32, help="client batch size (default 32)")
    p.add_argument("--lr", type=float, default=0.05, help="client SGD learning rate (default 0.05)")
    p.add_argument("--split", default="dirichlet", choices=("iid", "dirichlet"), help="client split")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--out", default="runs/federated", help="output folder (default runs/federated)")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs in OUT")
    p.set_defaults(func=_federated)


def _federated(args: argparse.Namespace) -> int:
    data = get_dataset(args.data, **data_options(args))
    options = parse_options(args.model_opt, "--model-opt")

    def make_model():
        return create_model(args.model, input_shape=data.input_shape, num_classes=data.num_classes, **options)

    common = {"clients": args.clients, "clients_per_round": args.clients_per_round, "rounds": args.rounds,
              "local_epochs": args.local_epochs, "batch_size": args.batch_size, "lr": args.lr, "split": args.split,
              "alpha": args.alpha, "seed": args.seed, "rounding": args.rounding}  # fmt: skip
    configs: dict[str, FederatedConfig] = {}
    for method in args.method or ["fedavg", "fedaqt"]:
        for bits in [None] if method == "fedavg" else (args.bits or [8]):
            label = "fedavg (float)" if bits is None else f"{method} {bits}-bit"
            if method == "fedaqt" and args.rounding == "nearest":
                label += " nearest"
            configs[label] = FederatedConfig(method=method, bits=bits or 8, **common)
    if not configs:
        raise ConfigError("no run asked for; give --method fedavg, qat or fedaqt")
    results = compare_methods(make_model, data, configs, out_dir=args.out, resume=args.resume)
    print(f"{args.clients} clients ({args.split}{'' if args.split == 'iid' else f', alpha {args.alpha}'}), "
          f"{args.rounds} rounds, {args.model} on {args.data}\n")  # fmt: skip
    print(methods_table(results))
    for label, result in results.items():
        failed = [(h["round"], h["failed"]) for h in result.history if h["failed"]]
        if failed:
            print(f"{label}: clients failed and were left out of their round: {failed}")
    out = Path(args.out)
    print(f"\nreport: {out / 'report.json'}\nplot: {out / 'accuracy.png'}")
    return 0
