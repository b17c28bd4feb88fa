"""``effdl quantize``: quantize a saved model (real int8, simulated PTQ, or QAT) and print the before/after profile."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.cli.common import (
    add_checkpoint_args,
    add_measure_args,
    load_trained,
    measure_config,
)
from effdl.compress import FinetuneConfig, Recipe, compress_model
from effdl.core.errors import ConfigError
from effdl.quant import (
    OBSERVERS,
    RUNTIMES,
    AWQConfig,
    GPTQConfig,
    HQQConfig,
    Int8Config,
    QuantConfig,
    RTNConfig,
    mixed_precision_config,
)
from effdl.train import default_train_config

__all__ = ["add_quantize"]

#: weight-only methods: Linear weights in int4/int8 run by PyTorch's CPU kernels, activations in float
WEIGHT_ONLY = {"rtn": RTNConfig, "gptq": GPTQConfig, "awq": AWQConfig, "hqq": HQQConfig}
#: ptq-int8: real int8 kernels; ptq: simulated at any bit width (calibration only); qat: simulated, then trained
METHODS = ("ptq-int8", "ptq", "qat", *WEIGHT_ONLY)


def add_quantize(sub) -> None:
    """Registers the ``quantize`` sub-command."""
    p = sub.add_parser(
        "quantize",
        help="quantize a saved model: real int8 (ptq-int8), simulated PTQ at any bits, or QAT",
        description=(
            "ptq-int8 calibrates and runs the model in real int8 kernels (torch.ao x86 or onnxruntime; 'auto' "
            "times both at --batch-size and keeps the faster). ptq simulates any weight/activation bit width "
            "after calibration; qat also trains it. rtn, gptq, awq and hqq quantize Linear weights only, to int4 or "
            "int8 with group-wise scales (--bits, --group-size), run by PyTorch's CPU weight-only kernels. Prints "
            "accuracy (perplexity for language models), size and latency before and after."
        ),
    )
    add_checkpoint_args(p)
    p.add_argument("--method", default="ptq-int8", choices=METHODS, help="default ptq-int8")
    p.add_argument("--bits-w", type=int, default=8, help="weight bits, 1-8 (ptq/qat; default 8)")
    p.add_argument("--bits-a", type=int, default=8, help="activation bits, 1-8, or 0 for weights only (default 8)")
    p.add_argument("--bits", type=int, default=4, help="weight bits of rtn/gptq/awq/hqq: 4 or 8 (default 4)")
    p.add_argument("--group-size", default="128", help="input features per scale (rtn/gptq/awq/hqq): 32, 64, 128, "
                   "256 or 'channel' for one per output row (default 128)")  # fmt: skip
    p.add_argument("--symmetric", action="store_true", help="symmetric grid without zero point (rtn/gptq/awq)")
    p.add_argument("--act-order", action="store_true", help="GPTQ: quantize columns by decreasing Hessian diagonal")
    p.add_argument("--runtime", default="auto", choices=RUNTIMES, help="int8 runtime (ptq-int8; default auto)")
    p.add_argument("--observer", default=None, help=f"activation observer: {', '.join(OBSERVERS.names())} (ptq/qat) "
                   "or minmax/histogram (ptq-int8)")  # fmt: skip
    p.add_argument("--calibration-batches", type=int, default=8, help="calibration batches of 64 (default 8)")
    p.add_argument("--lsq", action="store_true", help="learn step sizes (LSQ) during QAT")
    p.add_argument("--mixed-precision", type=float, default=None, metavar="AVG_BITS",
                   help="choose per-layer weight bits (2/4/8) by sensitivity under this average (ptq/qat)")  # fmt: skip
    p.add_argument("--accumulator-bits", type=int, default=None, help="simulate b-bit accumulators (ptq/qat)")
    p.add_argument("--ignore", action="append", default=[], metavar="NAME", help="keep this layer in float (regex)")
    p.add_argument("--epochs", type=int, default=5, help="QAT epochs (default 5)")
    p.add_argument("--lr", type=float, default=None, help="QAT learning rate (default: a tenth of the model's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the QAT run")
    p.add_argument("--out", default=None, help="output folder (default runs/quantize-MODEL)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT (else OUT starts over)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_measure_args(p)
    p.set_defaults(func=_quantize)


def _quantize(args: argparse.Namespace) -> int:
    model, data, name = load_trained(args)
    out = Path(args.out or f"runs/quantize-{name}")
    mixed = None
    if args.method in WEIGHT_ONLY:
        steps = [_weight_only(args)]
    elif args.method == "ptq-int8":
        steps: list = [Int8Config(runtime=args.runtime, calibration_batches=args.calibration_batches,
                                  observer=args.observer or "minmax")]  # fmt: skip
    else:
        config = QuantConfig(
            bits_w=args.bits_w,
            bits_a=None if args.bits_a == 0 else args.bits_a,
            observer=args.observer or ("moving_average" if args.method == "qat" else "minmax"),
            lsq=args.lsq,
            ignore=tuple(args.ignore),
            accumulator_bits=args.accumulator_bits,
        )
        if args.mixed_precision is not None:
            config, mixed = mixed_precision_config(model, data, config, args.mixed_precision,
                                                   example_inputs=data.example_inputs(8))  # fmt: skip
            out.mkdir(parents=True, exist_ok=True)
            mixed.plot(out / "mixed_precision.png")
            print("mixed precision (accuracy drop with one layer quantized, no retraining):")
            print(mixed.to_table() + "\n")
        steps = [config]
        if args.method == "qat":
            lr = args.lr if args.lr is not None else default_train_config(name).lr / 10
            steps.append(FinetuneConfig(train={"epochs": args.epochs, "lr": lr, "seed": args.seed}))
    outcome = compress_model(model, data, Recipe(steps), out_dir=out, restart=not args.resume,
                             measure=measure_config(args), deploy_final=False, progress=not args.no_progress,
                             command="quantize",
                             details={"mixed_precision": mixed.to_dict()} if mixed else None)  # fmt: skip
    quantized = outcome.stages[1]
    if args.method in WEIGHT_ONLY:
        d = quantized.details
        kernels = d["kernels"]
        print(f"{sum(kernels.values())} Linear layers at {d['bits_per_weight']:.3f} bits per weight (scales "
              f"included); kernels: {', '.join(f'{k} x{v}' for k, v in kernels.items())}")  # fmt: skip
        for row in d["float_layers"]:
            print(f"  float: {row['layer']} ({row['reason']})")
    elif "runtime" in quantized.details:
        times = ", ".join(f"{k} {v:.3f} ms" for k, v in (quantized.details["runtime_selection_ms"] or {}).items())
        print(f"int8 runtime: {quantized.details['runtime']}"
              + (f" (timed at batch {args.batch_size}: {times})" if times else ""))  # fmt: skip
    else:
        print(f"accuracy after calibration: {100 * (quantized.summary.accuracy or 0):.2f}%")
    if quantized.summary.perplexity is not None:
        print(f"perplexity: {outcome.stages[0].summary.perplexity:.3f} -> {quantized.summary.perplexity:.3f}")
    print(outcome.report.to_table())
    print(f"\nmodel: {outcome.report.artifacts['final_model']}\nreport: {out / 'report.json'}")
    return 0


def _weight_only(args: argparse.Namespace):
    group = args.group_size
    if group in ("channel", "none", "None"):
        size = None
    else:
        try:
            size = int(group)
        except ValueError:
            raise ConfigError(f"--group-size takes 32, 64, 128, 256 or 'channel', got {group!r}") from None
    fields = {"bits": args.bits, "group_size": size, "ignore": tuple(args.ignore)}
    if args.method != "hqq":
        fields["symmetric"] = args.symmetric
    elif args.symmetric:
        raise ConfigError("hqq fits a zero point per group; drop --symmetric")
    if args.method in ("gptq", "awq"):
        fields["calibration_batches"] = args.calibration_batches
    if args.method == "gptq":
        fields["act_order"] = args.act_order
    elif args.act_order:
        raise ConfigError("--act-order applies to --method gptq only")
    return WEIGHT_ONLY[args.method](**fields)
