"""The models users bring, model x operation: does each effdl operation work, with its figure, or fail with a clear
error? Side by side with Torch-Pruning on the same models where it runs.

Models: eight Hugging Face families built from small configs with seeded random weights (BERT, GPT-2, Llama with
grouped-query attention, ViT, ResNet, ConvNeXt, MobileViT, Swin; ``effdl.models.hf``) and two models made of torch's
own ``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` (``effdl.models.real``). Batch 8.

Operations and figures:
- ``prune``: structured pruning, 30% of every prunable group (L2); params after / before, and the largest output
  difference to the zeroed dense model relative to the output's scale (effdl checks it is below 1e-4 or refuses).
- ``factorize``: low-rank factorization, default config (energy 0.9, only where it saves parameters); params ratio,
  or what was left dense.
- ``fake-quant``: W8A8 simulation (per-channel weights, min-max activations); SQNR of the first output in dB and the
  number of weight-matrix layers quantized / present.
- ``int8 <runtime>``: real int8 on torch-ao (FX) and onnxruntime (static QDQ); SQNR on a batch not used for
  calibration (4 others calibrate) and the latency ratio to fp32 at batch 8 (interleaved, median of 7 rounds).
- ``onnx``: export of the pruned model and onnxruntime's agreement with PyTorch.
- ``reload``: save_model of the pruned model, load_model into a freshly built one, outputs bit-identical.
- ``Torch-Pruning``: ``tp.pruner.MetaPruner`` with the L2 importance at 30% (``ignored_layers``: the last Linear):
  whether the pruned model still runs, and its params ratio (Torch-Pruning does not check the result against a
  reference, so no equivalence figure).

Also the time of the dependency analysis on a 151-layer CNN and on a BERT-base-sized model (12 layers, width 768).

Run: .venv/bin/python benchmarks/real_models.py   (about 3 minutes; needs pip install -e '.[bench]')
Writes benchmarks/results/real_models.{md,json}.
"""

from __future__ import annotations

import copy
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from common import write_results
from effdl.core.table import format_table
from effdl.export import export_onnx, run_onnx
from effdl.factorize import LowRankConfig, factorize_
from effdl.measure.capture import flatten_tensors
from effdl.measure.latency import compare_latency
from effdl.models import load_model, save_model
from effdl.models.real import REAL_MODELS, real_model
from effdl.prune import StructuredPruneConfig, build_dependency_graph, plan_structured, prune_, zero_channels_
from effdl.quant import Int8Config, QuantConfig, convert_int8, quantize_
from effdl.quant.api import quantized_layers
from effdl.quant.int8 import available_runtimes
from effdl.quant.modules import matmul_layers

RATIO = 0.3


def first(out):
    return flatten_tensors(out)[0].detach()


def sqnr(ref, out):
    return float(10 * torch.log10(ref.pow(2).mean() / (ref - out).pow(2).mean().clamp(min=1e-30)))


def params(m):
    return sum(p.numel() for p in m.parameters())


def short(exc: Exception) -> str:
    return f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:110]}"


def run_model(name: str, tmp: Path) -> dict[str, str]:
    row: dict[str, str] = {"model": name}
    model, x = real_model(name, batch=8)
    calib = [real_model(name, batch=8, seed=s)[1] for s in range(1, 5)]
    with torch.no_grad():
        ref = first(model(x))
    n = params(model)

    pruned = copy.deepcopy(model)
    try:
        _, plan = plan_structured(pruned, StructuredPruneConfig(ratio=RATIO, criterion="l2"), x)
        zeroed = copy.deepcopy(pruned)
        zero_channels_(zeroed, plan)
        prune_(pruned, StructuredPruneConfig(ratio=RATIO, criterion="l2"), example_inputs=x)
        with torch.no_grad():
            a, b = first(pruned(x)), first(zeroed(x))
        rel = float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))
        row["prune"] = f"{params(pruned) / n:.2f}x params, diff {rel:.0e}"
    except Exception as exc:  # noqa: BLE001 - a cell reports whatever error a user would get
        row["prune"] = short(exc)
        pruned = None

    fact = copy.deepcopy(model)
    try:
        rep = factorize_(fact, LowRankConfig(), example_inputs=x)
        left = len(rep.details["left_out"])
        row["factorize"] = f"{params(fact) / n:.2f}x params ({rep.details['factorized']} layers" + (
            f", {left} left dense)" if left else ")")
    except Exception as exc:  # noqa: BLE001 - a cell reports whatever error a user would get
        row["factorize"] = short(exc)

    fq = copy.deepcopy(model)
    try:
        quantize_(fq, QuantConfig(), example_inputs=x, data=calib)
        with torch.no_grad():
            s = sqnr(ref, first(fq(x)))
        row["fake-quant"] = f"{s:.1f} dB ({len(quantized_layers(fq))}/{len(matmul_layers(model))} layers)"
    except Exception as exc:  # noqa: BLE001 - a cell reports whatever error a user would get
        row["fake-quant"] = short(exc)

    for runtime in ("torch-ao", "onnxruntime"):
        key = f"int8 {runtime}"
        if runtime not in available_runtimes():
            row[key] = "not available"
            continue
        try:
            q = convert_int8(model, Int8Config(runtime=runtime), example_inputs=x, data=calib)
            s = sqnr(ref, first(q(x)))
            t = compare_latency({"fp32": model, "int8": q}, x, rounds=7, calls=3)
            row[key] = f"{s:.1f} dB, {t['fp32'].median_ms / t['int8'].median_ms:.2f}x speed"
        except Exception as exc:  # noqa: BLE001 - a cell reports whatever error a user would get
            row[key] = short(exc)

    target = pruned if pruned is not None else model
    try:
        path = export_onnx(target, x, tmp / f"{name}.onnx")
        out = torch.from_numpy(run_onnx(path, x)[0])
        row["onnx"] = f"ok (max diff {float((out - first(target(x))).abs().max()):.0e})"
    except Exception as exc:  # noqa: BLE001 - a cell reports whatever error a user would get
        row["onnx"] = short(exc)
    try:
        p = save_model(target, tmp / f"{name}.safetensors")
        fresh, _ = real_model(name, seed=7)
        again = load_model(p, model=fresh)
        with torch.no_grad():
            same = torch.equal(first(again(x)), first(target(x)))
        row["reload"] = "bit-identical" if same else "differs"
    except Exception as exc:  # noqa: BLE001 - a cell reports whatever error a user would get
        row["reload"] = short(exc)
    row["Torch-Pruning"] = torch_pruning(model, x, n)
    return row


def torch_pruning(model: nn.Module, x: torch.Tensor, n: int) -> str:
    try:
        import torch_pruning as tp
    except ImportError:
        return "not installed"
    m = copy.deepcopy(model)
    try:
        outputs = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = tp.pruner.MetaPruner(m, x, importance=tp.importance.MagnitudeImportance(p=2),
                                          pruning_ratio=RATIO, ignored_layers=outputs)  # fmt: skip
            pruner.step()
            with torch.no_grad():
                m(x)
        return f"runs, {params(m) / n:.2f}x params (equivalence not checked)"
    except Exception as exc:  # noqa: BLE001 - a cell reports whatever error a user would get
        return short(exc)


def analysis_times() -> list[str]:
    layers: list[nn.Module] = []
    for _ in range(50):
        layers += [nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()]
    cnn = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    lines = []
    for label, model, x in [("151-layer CNN", cnn, torch.randn(2, 32, 16, 16)), ("BERT-base size", *_bert_base())]:
        build_dependency_graph(model, x)  # warm-up
        times = []
        for _ in range(3):
            t = time.perf_counter()
            g = build_dependency_graph(model, x)
            times.append(time.perf_counter() - t)
        lines.append(f"- Dependency analysis of the {label}: {sorted(times)[1]:.2f} s (median of 3; {len(g.groups)} "
                     "groups).")  # fmt: skip
    return lines


def _bert_base():
    from effdl.models.hf import require_transformers

    t = require_transformers()
    torch.manual_seed(0)
    return t.BertModel(t.BertConfig()).eval(), torch.randint(0, 30522, (1, 128))


def main() -> None:
    t0 = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in REAL_MODELS:
            print(name, flush=True)
            rows.append(run_model(name, Path(d)))
    cols = ["model", "prune", "factorize", "fake-quant", "int8 torch-ao", "int8 onnxruntime", "onnx", "reload",
            "Torch-Pruning"]  # fmt: skip
    table = format_table([[r.get(c, "") for c in cols] for r in rows], cols, align="l" * len(cols))
    notes = [
        "Every effdl operation on the models users bring (batch 8, random weights from small configs); a cell is the",
        "figure, or the error the user gets. Pruning removes 30% of every prunable group; the diff is the pruned",
        "output against the zeroed dense model relative to its scale. int8 SQNR on a batch not used for calibration.",
        *analysis_times(),
        f"Total run time {time.time() - t0:.0f} s.",
        "",
    ]
    print(write_results("real_models", "The models users bring: model x operation", notes, table, rows))


if __name__ == "__main__":
    main()
