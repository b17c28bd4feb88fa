"""``effdl quantize``: quantize a saved model (real int8, simulated PTQ, or QAT) and print the before/after profile."""

from __future__ import annotations

import argparse
from pathlib import Path

from effdl.cli.common import (
    add_checkpoint_args,
    add_measure_args,
    claim_out,
    load_trained,
    measure_config,
    parse_options,
)
from effdl.compress import FinetuneConfig, Recipe, compress_model
from effdl.core.errors import ConfigError
from effdl.core.io import atomic_write_json
from effdl.quant import (
    OBSERVERS,
    RUNTIMES,
    AWQConfig,
    GPTQConfig,
    HQQConfig,
    Int8Config,
    QuantConfig,
    RTNConfig,
    accuracy_controlled_config,
    diagnose_quantization,
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
    p.add_argument("--observer", default=None, help=f"activation observer: {', '.join(OBSERVERS.names())} "
                   "(ptq-int8 also takes histogram)")  # fmt: skip
    p.add_argument("--layer-observer", action="append", default=[], metavar="NAME=OBSERVER",
                   help="calibration method of one layer's input (name or regex), repeatable")  # fmt: skip
    p.add_argument("--bn-reestimate", action="store_true", help="PTQ: correct BatchNorm statistics for quantization")
    p.add_argument("--equalize", action="store_true", help="PTQ: cross-layer equalization")
    p.add_argument("--smoothquant", type=float, default=None, metavar="ALPHA",
                   help="PTQ: SmoothQuant migration strength for Linear layers (e.g. 0.5)")  # fmt: skip
    p.add_argument("--adaround", type=int, default=0, metavar="ITERS", help="PTQ: AdaRound iterations per layer")
    p.add_argument("--bias-correction", action="store_true", help="PTQ: empirical bias correction")
    p.add_argument("--diagnose", action="store_true",
                   help="print the per-layer quantization report (SQNR alone and cumulative, ranges, outlier "
                        "channels) of this configuration, save OUT/diagnosis.png and .json, and stop")  # fmt: skip
    p.add_argument("--tolerance", type=float, default=None, metavar="POINTS",
                   help="accuracy-controlled PTQ: keep the most sensitive layers float until test accuracy is within "
                        "POINTS (percentage points) of the float model")  # fmt: skip
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
    with claim_out(args, out, model, data):
        return _quantize_into(args, model, data, name, out)


def _quantize_into(args: argparse.Namespace, model, data, name: str, out: Path) -> int:
    mixed = None
    if args.method in WEIGHT_ONLY:
        steps = [_weight_only(args)]
    elif args.method == "ptq-int8":
        config = Int8Config(
            runtime=args.runtime,
            calibration_batches=args.calibration_batches,
            observer=args.observer or "minmax",
            ignore=tuple(args.ignore),
            **_techniques(args),
        )
        steps: list = [_ptq_extras(args, model, data, config, out)]
        if steps[0] is None:
            return 0
    else:
        config = QuantConfig(
            bits_w=args.bits_w,
            bits_a=None if args.bits_a == 0 else args.bits_a,
            observer=args.observer or ("moving_average" if args.method == "qat" else "minmax"),
            lsq=args.lsq,
            ignore=tuple(args.ignore),
            accumulator_bits=args.accumulator_bits,
            **_techniques(args),
        )
        config = _ptq_extras(args, model, data, config, out)
        if config is None:
            return 0
        if args.mixed_precision is not None:
            config, mixed = mixed_precision_config(model, data, config, args.mixed_precision,
                                                   example_inputs=data.example_inputs(8))  # fmt: skip
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
        d = quantized.details
        times = ", ".join(f"{k} {v:.3f} ms" for k, v in (d["runtime_selection_ms"] or {}).items())
        print(f"int8 runtime: {d['runtime']}" + (f" (timed at batch {args.batch_size}: {times})" if times else ""))
        print(f"  why: {d.get('reason', '')}")
        for runtime, why in (d.get("runtimes_skipped") or {}).items():
            print(f"  skipped {runtime}: {why}")
        for runtime, db in (d.get("sqnr_db") or {}).items():
            print(f"  {runtime}: SQNR {db:.1f} dB against fp32 on calibration data")
        if "agreement" in d:
            a = d["agreement"]
            print(f"  onnxruntime vs effdl's simulation: {a['steps']:.2f} quantization steps apart at most "
                  f"({a['steps_without_int8_kernels']:.2f} with onnxruntime's int8 fusions off)")  # fmt: skip
        for layer, why in (d.get("float_layers") or {}).items():
            print(f"  float in the runtime: {layer} ({why})")
    else:
        print(f"accuracy after calibration: {100 * (quantized.summary.accuracy or 0):.2f}%")
    if quantized.summary.perplexity is not None:
        print(f"perplexity: {outcome.stages[0].summary.perplexity:.3f} -> {quantized.summary.perplexity:.3f}")
    print(outcome.report.to_table())
    print(f"\nmodel: {outcome.report.artifacts['final_model']}\nreport: {out / 'report.json'}")
    return 0


def _techniques(args: argparse.Namespace) -> dict:
    """The PTQ technique fields of QuantConfig / Int8Config from the flags."""
    layer_observer = parse_options(args.layer_observer, "--layer-observer")
    return {"bn_reestimate": args.bn_reestimate, "equalize": args.equalize, "smoothquant": args.smoothquant,
            "adaround": args.adaround, "bias_correction": args.bias_correction,
            "per_layer_observer": {k: str(v) for k, v in layer_observer.items()}}  # fmt: skip


def _ptq_extras(args: argparse.Namespace, model, data, config, out: Path):
    """--diagnose (report, then None: stop) and --tolerance (the accuracy-controlled config)."""
    if not args.diagnose and args.tolerance is None:
        return config
    from torch.utils.data import DataLoader

    from effdl.measure import evaluate

    example = data.example_inputs(8)
    calib = DataLoader(data.train, batch_size=64, shuffle=False)
    out.mkdir(parents=True, exist_ok=True)
    if args.diagnose:
        diagnosis = diagnose_quantization(model, config, example_inputs=example, data=calib,
                                          batches=args.calibration_batches)  # fmt: skip
        print(diagnosis.to_table())
        print(f"most sensitive: {', '.join(diagnosis.worst(3))}")
        print(f"plot: {diagnosis.plot(out / 'diagnosis.png')}")
        atomic_write_json(out / "diagnosis.json", diagnosis.to_dict())
        return None
    result = accuracy_controlled_config(
        model, config, metric=lambda m: evaluate(m, data.test)["accuracy"], tolerance=args.tolerance / 100,
        example_inputs=example, data=calib, batches=args.calibration_batches,
    )  # fmt: skip
    print("accuracy-controlled PTQ (test accuracy, simulated):")
    print(result.to_table() + "\n")
    return result.config


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
