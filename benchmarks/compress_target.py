"""Compression to a target (`effdl compress --target`) against the route a user would take by hand, side by side.

Part 1, MNIST-1D cnn1d and digits cnn2d (trained first, seed 0, recommended settings), batch 32:
- effdl: `compress_to_target(objective="latency+size", tolerance=1.0)`: the per-layer search, its recipe replayed
  (prune per layer, fine-tune 10 epochs with distillation, int8 in onnxruntime with sensitive layers float).
- by hand: Torch-Pruning L1 (MagnitudePruner, p=1) removing 50% of the channels, the same fine-tune (effdl's
  FinetuneConfig, 10 epochs, distillation from the original), onnxruntime's own `quantize_static` (default settings,
  8 calibration batches of 64).
Latency: the original (PyTorch float), effdl's final model and the by-hand model timed side by side in interleaved
runs (medians and IQR of per-round means; five runs, per model the median one). Both int8 models are timed through
the same harness: their ONNX files in an onnxruntime session (torch's thread count, spinning off), numpy in and out
(effdl's `Int8Model` wrapper adds a few microseconds per call, several percent at these sizes).
A check row lowers effdl's fine-tuned plan with the by-hand route's quantize_static instead of effdl's int8
conversion, which separates the plan's share of the speed-up from the lowering's. Size: the files (original:
safetensors; both int8 models: their ONNX file).

Part 2, a depthwise-separable network: effdl's MobileNetV2 (width 0.5) trained here on digits upsampled to 32x32,
`compress_to_target(objective="latency", runtime="pytorch")`; its latency ratio (measured) against its MAC ratio,
and uniform L1 pruning of every group at the ratio that gives the same MACs, timed side by side with it.

Run: .venv/bin/python benchmarks/compress_target.py   (about 45 minutes on 2 cores)
Writes benchmarks/results/compress_target.{md,json} and compress_target_front_<model>.png.
"""

from __future__ import annotations

import copy
import logging
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from common import RESULTS, write_results
from effdl.compress import FinetuneConfig, TargetConfig, compress_to_target
from effdl.core.table import format_table, human_bytes
from effdl.core.transform import TransformContext, run_transform
from effdl.data import DatasetSplits, get_dataset
from effdl.distill import DistillConfig
from effdl.export import export_onnx
from effdl.export.onnx import onnx_session
from effdl.measure import MeasureConfig, count_macs
from effdl.measure.latency import compare_latency
from effdl.models import create_model, load_model, save_model
from effdl.prune import StructuredPruneConfig
from effdl.prune.structured import plan_structured
from effdl.prune.surgery import remove_channels_
from effdl.train import Trainer, default_train_config, evaluate

BATCH = 32


def train(name, data, **options):
    torch.manual_seed(0)
    model = create_model(name, input_shape=data.input_shape, num_classes=data.num_classes, **options)
    Trainer(model, default_train_config(name, progress=False)).fit(data.train)
    return model.eval()


def by_hand(model, data, tmp: Path):
    """Torch-Pruning L1 50% + the same fine-tune + onnxruntime quantize_static."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model)
    last = [m for m in pruned.modules() if isinstance(m, torch.nn.Linear)][-1]
    x = data.example_inputs(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp.pruner.MagnitudePruner(pruned, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
                                  ignored_layers=[last]).step()  # fmt: skip
    step = FinetuneConfig(train={"epochs": 10, "seed": 0}, distill=DistillConfig())
    context = TransformContext(example_inputs=x, dataset=data, teacher=model, progress=False)
    pruned = run_transform(pruned, step, context).model.eval()
    return ort_static(pruned, data, tmp / "hand")


def session_callable(path):
    """An int8 ONNX file as the bare callable every int8 model is timed through (the same harness for effdl's and
    the by-hand model: an onnxruntime session with torch's thread count and spinning off, numpy in and out)."""
    session = onnx_session(path)
    name = session.get_inputs()[0].name

    def run(x):
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

    return run


def ort_static(model, data, stem: Path):
    """onnxruntime's own ``quantize_static`` (default settings, 8 calibration batches of 64) of a float model:
    (the int8 model as a callable, its test accuracy, its file size)."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    x = data.example_inputs(2)
    fp32 = stem.with_name(stem.name + "-fp32.onnx")
    export_onnx(model, x, fp32)
    name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data.train), generator=g)[: 8 * 64]
    calib = [torch.stack([data.train[int(i)][0] for i in idx[j : j + 64]]) for j in range(0, len(idx), 64)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: c.numpy()} for c in calib])

        def get_next(self):
            return next(self.it, None)

    int8 = stem.with_name(stem.name + "-int8.onnx")
    quantize_static(str(fp32), str(int8), Reader())
    run = session_callable(int8)
    correct = total = 0
    for i in range(0, len(data.test), 256):
        xs = torch.stack([data.test[j][0] for j in range(i, min(i + 256, len(data.test)))])
        ys = torch.tensor([int(data.test[j][1]) for j in range(i, min(i + 256, len(data.test)))])
        correct += int((run(xs).argmax(1) == ys).sum())
        total += len(ys)
    return run, correct / total, int8.stat().st_size

def timed(fns, x, repeats: int = 5):
    """Side-by-side timing (41 interleaved rounds) repeated ``repeats`` times; per model the run with the median
    latency (one noisy run on the shared CPU does not decide a comparison)."""
    runs = [compare_latency(fns, x, rounds=41) for _ in range(repeats)]
    return {k: sorted((r[k] for r in runs), key=lambda s: s.median_ms)[repeats // 2] for k in fns}


def speedups(stats, base):
    """Speed-up of each key over ``base``: the ratio of medians."""
    return {k: base.median_ms / s.median_ms for k, s in stats.items()}


def part1(records, rows):
    for name, data_name in (("cnn1d", "mnist1d"), ("cnn2d", "digits")):
        data = get_dataset(data_name)
        model = train(name, data)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            original = save_model(model, tmp / "original.safetensors").stat().st_size
            target = TargetConfig(objective="latency+size", tolerance=1.0)
            result = compress_to_target(model, data, target, out_dir=tmp / "target",
                                        measure=MeasureConfig(batch_size=BATCH, repeats=30), progress=False)
            shutil.copy(tmp / "target" / "front.png", RESULTS / f"compress_target_front_{name}.png")
            final_stage = result.outcome.stages[-1]
            ours_size = Path(final_stage.path).stat().st_size
            ours_acc = final_stage.summary.accuracy
            hand, hand_acc, hand_size = by_hand(model, data, tmp)
            # effdl's plan lowered by onnxruntime's quantize_static: separates the plan from the int8 lowering
            plan_ort, plan_ort_acc, plan_ort_size = ort_static(load_model(result.outcome.stages[-2].path), data,
                                                               tmp / "plan")  # fmt: skip
            x = data.example_inputs(BATCH)
            assert str(final_stage.path).endswith(".onnx"), final_stage.path  # the int8 model onnxruntime runs
            ours = session_callable(final_stage.path)
            torch.testing.assert_close(ours(x), result.outcome.model(x))  # the very model effdl deployed
            stats = timed({"original": model, "effdl": ours, "by hand": hand,
                           "effdl plan, ORT static": plan_ort}, x)  # fmt: skip
            base_acc = evaluate(model, data.test)["accuracy"]
        faster = speedups(stats, stats["original"])
        rec = {
            "model": name, "original_accuracy": base_acc, "original_bytes": original,
            "effdl": {"accuracy": ours_acc, "bytes": ours_size, "smaller": original / ours_size,
                      "faster": faster["effdl"], "latency_ms": stats["effdl"].median_ms,
                      "iqr_ms": stats["effdl"].iqr_ms, "plan": result.details["plan"],
                      "float_layers": result.float_layers, "steps": len(result.points) - 1,
                      "stop": result.stop_reason, "latency_model": result.details["latency_model"],
                      "recipe": result.recipe.to_dict()},
            "by_hand": {"accuracy": hand_acc, "bytes": hand_size, "smaller": original / hand_size,
                        "faster": faster["by hand"], "latency_ms": stats["by hand"].median_ms,
                        "iqr_ms": stats["by hand"].iqr_ms},
            "effdl_plan_ort_static": {"accuracy": plan_ort_acc, "bytes": plan_ort_size,
                                      "smaller": original / plan_ort_size,
                                      "faster": faster["effdl plan, ORT static"],
                                      "latency_ms": stats["effdl plan, ORT static"].median_ms,
                                      "iqr_ms": stats["effdl plan, ORT static"].iqr_ms},
            "original_latency_ms": stats["original"].median_ms, "original_iqr_ms": stats["original"].iqr_ms,
        }  # fmt: skip
        e, h, po = rec["effdl"], rec["by_hand"], rec["effdl_plan_ort_static"]
        e["dominates"] = bool(e["smaller"] >= h["smaller"] and e["faster"] >= h["faster"]
                              and base_acc - e["accuracy"] <= 0.01 + 1e-9)  # fmt: skip
        lm = e["latency_model"]
        records.append(rec)
        for label, r in (("effdl --target latency+size", e), ("by hand: TP L1 50% + FT + ORT static int8", h),
                         ("(check) effdl's plan + ORT static int8", po)):
            rows.append([name, label, f"{100 * base_acc:.2f}% -> {100 * r['accuracy']:.2f}%",
                         f"{human_bytes(original)} -> {human_bytes(r['bytes'])}", f"{r['smaller']:.2f}x",
                         f"{stats['original'].median_ms:.3f} -> {r['latency_ms']:.3f} ± {r['iqr_ms']:.3f} ms",
                         f"{r['faster']:.2f}x",
                         ("yes" if r.get("dominates") else "no") if r is e else "",
                         f"{lm['predicted_ms']:.3f} / {lm['measured_ms']:.3f} ms" if r is e else ""])  # fmt: skip
        print(*rows[-3:], sep="\n", file=sys.stderr, flush=True)


def upsampled_digits() -> DatasetSplits:
    d = get_dataset("digits")

    def up(ds):
        xs = torch.stack([ds[i][0] for i in range(len(ds))])
        ys = torch.tensor([int(ds[i][1]) for i in range(len(ds))])
        return TensorDataset(F.interpolate(xs, size=(32, 32), mode="bilinear", align_corners=False), ys)

    return DatasetSplits("digits-32x32", up(d.train), up(d.test), (1, 32, 32), 10)


def uniform_at_macs(model, x, macs_goal):
    """Uniform L1 pruning of every group, at the ratio whose MACs match ``macs_goal`` (bisection)."""
    lo, hi = 0.0, 0.95
    best = None
    for _ in range(12):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        _, plan = plan_structured(trial, StructuredPruneConfig(ratio=mid), x[:2])
        remove_channels_(trial, plan)
        macs = count_macs(trial, x[:1])
        best = (mid, trial.eval(), macs)
        if macs > macs_goal:
            lo = mid
        else:
            hi = mid
    return best


def part2(records, rows2):
    data = upsampled_digits()
    model = train("mobilenetv2", data, width_mult=0.5)
    x = data.example_inputs(BATCH)
    base_macs = count_macs(model, x[:1])
    with tempfile.TemporaryDirectory() as tmp:
        target = TargetConfig(objective="latency", tolerance=1.0, runtime="pytorch", finetune_epochs=10,
                              max_steps=30, time_budget_s=900)  # fmt: skip
        result = compress_to_target(model, data, target, out_dir=Path(tmp) / "t",
                                    measure=MeasureConfig(batch_size=BATCH, repeats=30), progress=False)  # fmt: skip
        shutil.copy(Path(tmp) / "t" / "front.png", RESULTS / "compress_target_front_mobilenetv2.png")
    searched = result.outcome.model.eval()
    macs = count_macs(searched, x[:1])
    ratio, uniform, umacs = uniform_at_macs(model, x, macs)
    stats = timed({"original": model, "searched": searched, "uniform": uniform}, x)
    rec = {"model": "mobilenetv2 (width 0.5, digits 32x32)", "original_macs": base_macs,
           "original_accuracy": result.details["baseline"]["accuracy"],
           "searched": {"macs": macs, "mac_ratio": base_macs / macs,
                        "latency_ratio": stats["original"].median_ms / stats["searched"].median_ms,
                        "accuracy": result.details["final"]["accuracy"], "plan": result.details["plan"],
                        "latency_model": result.details["latency_model"], "steps": len(result.points) - 1,
                        "stop": result.stop_reason},
           "uniform": {"ratio": ratio, "macs": umacs, "mac_ratio": base_macs / umacs,
                       "latency_ratio": stats["original"].median_ms / stats["uniform"].median_ms},
           "latency_ms": {k: v.median_ms for k, v in stats.items()}}  # fmt: skip
    for key in ("searched", "uniform"):
        r = rec[key]
        r["latency_over_mac_ratio"] = r["latency_ratio"] / r["mac_ratio"]
        rows2.append([rec["model"], "latency-aware search" if key == "searched" else f"uniform L1 {ratio:.0%}",
                      f"{r['mac_ratio']:.2f}x", f"{r['latency_ratio']:.2f}x", f"{r['latency_over_mac_ratio']:.2f}",
                      f"{100 * r['accuracy']:.2f}%" if "accuracy" in r else "(not fine-tuned)"])  # fmt: skip
    records.append(rec)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("effdl.compress.target").setLevel(logging.INFO)
    records, rows, rows2 = [], [], []
    part1(records, rows)
    part2(records, rows2)
    table = format_table(rows, ["model", "route", "accuracy", "size", "smaller", f"latency b{BATCH}", "faster",
                                "dominates by-hand", "latency model pred. / meas."], align="llllrlrll")  # fmt: skip
    table2 = format_table(rows2, ["model", "pruning", "MAC ratio", f"latency ratio b{BATCH}", "latency / MAC ratio",
                                  "accuracy"], align="llrrrl")  # fmt: skip
    notes = [
        "effdl: compress_to_target(objective='latency+size', tolerance=1.0): per-layer channel ratios and int8",
        "precision searched with the latency table of this machine, recipe replayed from the original model.",
        "By hand: Torch-Pruning L1 50%, the same 10-epoch fine-tune with distillation, onnxruntime quantize_static.",
        "Latency: original (PyTorch float), effdl and by-hand models interleaved, medians (± IQR) of 41 rounds; of",
        "5 such runs the median. Both int8 models run as bare onnxruntime sessions of their ONNX files (same options).",
        "The '(check)' row lowers effdl's fine-tuned plan with the by-hand route's quantize_static instead of effdl's",
        "int8 conversion: it tells the plan's share of the speed-up from the lowering's.",
        "'dominates': smaller and faster than by hand, and within 1 point of the original on the test set.",
        "Latency model: predicted against measured latency of the final model in the search runtime (final run).",
    ]
    text = "\n".join([table, "", "## Depthwise-separable network: latency ratio against MAC ratio", "",
                      "MobileNetV2 (width 0.5) trained here on digits upsampled to 32x32; objective latency in PyTorch",
                      "float, tolerance 1 point, a 900 s search; uniform L1 pruning of every group at the ratio with",
                      "the same MACs; all timed side by side.", "", table2])  # fmt: skip
    write_results("compress_target", "Compression to a target: effdl's search against the by-hand route", notes,
                  text, records)  # fmt: skip


if __name__ == "__main__":
    main()
