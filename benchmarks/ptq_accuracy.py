"""Post-training int8 that keeps accuracy: plain min-max PTQ, each PTQ technique, their combination and QAT, side by
side on a depthwise-separable network trained here, all run as real int8 in onnxruntime (effdl's simulation lowered
to QDQ: same scales, same integer weights); plus GPT-2 and ViT from config through the same path.

1. ``dw-cnn``: a depthwise-separable 1D CNN (stem conv, three [depthwise 3 -> BN -> ReLU -> pointwise 1 -> BN ->
   ReLU] blocks with per-channel weight ranges left as training made them, global average pool, Linear) trained 12
   epochs on MNIST-1D here (seed 0). Every int8 row is ``convert_int8(model, Int8Config(runtime="onnxruntime",
   fallback=False, <technique>), data=8 calibration batches of 64 training samples)``; ``QAT`` is the fake-quant
   W8A8 model fine-tuned 3 epochs (lr 1e-3) and then lowered as it is. ``W4A8`` rows: 4-bit weight codes (effdl's
   fake-quant with the technique) lowered as they are: they run in the same int8 kernels, and show what each
   technique recovers where rounding matters. Test accuracy on the 1,000 test samples; ``agree``: top-1 agreement
   with fp32; ``steps``: the largest difference between the onnxruntime output and effdl's simulation on a
   calibration batch, in 8-bit steps of the output range (``fusions off``: the same graph with onnxruntime's int8
   fusions off, every QDQ pair computed in float); speedup fp32 / int8 at batch 32, timed interleaved (median of 11
   rounds). The weights-per-tensor rows (``per_channel=False``) are the case equalization exists for.
2. GPT-2 and ViT from config (random weights, ``effdl.models.real``): SQNR of the int8 logits against fp32 on a batch
   not used for calibration, plain and with SmoothQuant (alpha 0.5).

Run: .venv/bin/python benchmarks/ptq_accuracy.py   (about 5 minutes on 2 cores; needs pip install -e '.[bench]')
Writes benchmarks/results/ptq_accuracy.{md,json}.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from common import write_results
from effdl.core.table import format_table
from effdl.data import get_dataset
from effdl.measure import compare_latency, evaluate, sqnr_db
from effdl.measure.capture import flatten_tensors
from effdl.quant import Int8Config, QuantConfig, convert_int8, quantize_
from effdl.train import TrainConfig, Trainer


def dw_cnn() -> nn.Module:
    def block(c_in, c_out, stride):
        return [nn.Conv1d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False), nn.BatchNorm1d(c_in),
                nn.ReLU(), nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out), nn.ReLU()]  # fmt: skip

    return nn.Sequential(
        nn.Conv1d(1, 32, 5, padding=2, bias=False), nn.BatchNorm1d(32), nn.ReLU(),
        *block(32, 64, 2), *block(64, 64, 1), *block(64, 128, 2),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip


TECHNIQUES = {
    "plain min-max": {},
    "entropy calibration": {"observer": "entropy"},
    "BN re-estimation": {"bn_reestimate": True},
    "equalization": {"equalize": True},
    "bias correction": {"bias_correction": True},
    "AdaRound (500)": {"adaround": 500},
    "combination": {"bn_reestimate": True, "equalize": True, "adaround": 500, "bias_correction": True},
}


def accuracy(model, data) -> float:
    return 100 * evaluate(model, data.test)["accuracy"]


def agreement(model, reference_labels, data) -> float:
    x = torch.stack([data.test[i][0] for i in range(len(data.test))])
    with torch.no_grad():
        return 100 * float((model(x).argmax(1) == reference_labels).float().mean())


W4A8 = {
    "plain min-max": {},
    "equalization": {"equalize": True},
    "AdaRound (500)": {"adaround": 500},
    "bias correction": {"bias_correction": True},
    "combination": {"bn_reestimate": True, "equalize": True, "adaround": 500, "bias_correction": True},
}


def _record(label, q, data, labels, seconds) -> dict:
    a = q.meta["lowering"]["agreement"]
    return {"model": "dw-cnn", "method": label, "accuracy": accuracy(q, data), "agreement": agreement(q, labels, data),
            "steps": a["steps"], "steps_without_int8_kernels": a["steps_without_int8_kernels"],
            "float_layers": list(q.meta["lowering"]["float_layers"]), "seconds": seconds}  # fmt: skip


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    data = get_dataset("mnist1d")
    model = dw_cnn()
    start = time.time()
    Trainer(model, TrainConfig(epochs=12, lr=1e-2, batch_size=64, progress=False, seed=0)).fit(data.train)
    model.eval()
    print(f"trained in {time.time() - start:.0f} s")
    calib = list(DataLoader(data.train, batch_size=64, shuffle=False))[:8]
    x_test = torch.stack([data.test[i][0] for i in range(len(data.test))])
    with torch.no_grad():
        labels = model(x_test).argmax(1)
    fp32_acc = accuracy(model, data)
    rows, records, candidates = [], [], {}
    for per_channel in (True, False):
        for name, fields in TECHNIQUES.items():
            if not per_channel and name not in ("plain min-max", "equalization", "combination"):
                continue
            config = Int8Config(runtime="onnxruntime", fallback=False, per_channel=per_channel, **fields)
            start = time.time()
            q = convert_int8(model, config, example_inputs=calib[0][0], data=calib)
            label = name + ("" if per_channel else " (per-tensor weights)")
            candidates[label] = q
            records.append(_record(label, q, data, labels, time.time() - start))
            print(records[-1])
    for name, fields in W4A8.items():  # 4-bit weight codes run in the same int8 kernels: where techniques matter
        sim = copy.deepcopy(model)
        quantize_(sim, QuantConfig(bits_w=4, bits_a=8, **fields), example_inputs=calib[0][0], data=calib)
        q = convert_int8(sim, Int8Config(runtime="onnxruntime", fallback=False), example_inputs=calib[0][0],
                         data=calib)  # fmt: skip
        label = f"W4A8 {name}"
        candidates[label] = q
        records.append(_record(label, q, data, labels, None))
        print(records[-1])
    qat = copy.deepcopy(model)
    quantize_(qat, QuantConfig(), example_inputs=calib[0][0], data=calib)
    Trainer(qat, TrainConfig(epochs=3, lr=1e-3, batch_size=64, progress=False, seed=0)).fit(data.train)
    qat.eval()
    q = convert_int8(qat, Int8Config(runtime="onnxruntime", fallback=False), example_inputs=calib[0][0], data=calib)
    candidates["QAT W8A8 (3 epochs)"] = q
    records.append(_record("QAT W8A8 (3 epochs)", q, data, labels, None))
    print(records[-1])
    x = calib[0][0][:1].expand(32, -1, -1).contiguous()
    times = compare_latency({"fp32": model, **candidates}, x, rounds=11)
    for r in records:
        r["speedup"] = times["fp32"].median_ms / times[r["method"]].median_ms
    for r in records:
        rows.append([r["method"], f"{r['accuracy']:.2f}%", f"{r['accuracy'] - fp32_acc:+.2f}",
                     f"{r['agreement']:.1f}%", f"{r['steps']:.2f}", f"{r['steps_without_int8_kernels']:.2f}",
                     f"{r['speedup']:.2f}x"])  # fmt: skip
    headers = ["dw-cnn, real int8 in onnxruntime", "test acc", "vs fp32", "agree", "steps", "steps, fusions off",
               "speedup"]  # fmt: skip
    table = format_table(rows, headers)
    table = f"fp32 test accuracy: {fp32_acc:.2f}%\n\n" + table

    from effdl.models.real import real_model

    rows2 = []
    for name in ("gpt2", "vit"):
        m, x = real_model(name, batch=8)
        batches = [real_model(name, batch=8, seed=s)[1] for s in range(1, 5)]
        held = real_model(name, batch=8, seed=9)[1]
        with torch.no_grad():
            ref = flatten_tensors(m(held))[0]
        for label, fields in (("plain", {}), ("SmoothQuant 0.5", {"smoothquant": 0.5})):
            config = Int8Config(runtime="onnxruntime", fallback=False, **fields)
            q = convert_int8(m, config, example_inputs=x, data=batches)
            db = sqnr_db(ref, q(held))
            a = q.meta["lowering"]["agreement"]
            records.append({"model": name, "method": label, "sqnr_db": db, "steps": a["steps"],
                            "steps_without_int8_kernels": a["steps_without_int8_kernels"]})  # fmt: skip
            rows2.append([name, label, f"{db:.1f}", f"{a['steps']:.2f}", f"{a['steps_without_int8_kernels']:.2f}"])
            print(records[-1])
    table += "\n\n" + format_table(rows2, ["model (from config)", "int8 onnxruntime", "SQNR dB", "steps",
                                            "steps, int8 fusions off"])  # fmt: skip
    notes = [line for line in (__doc__ or "").splitlines()[:20]]
    print(write_results("ptq_accuracy", "PTQ techniques on real int8 (onnxruntime)", notes[2:], table, records))


if __name__ == "__main__":
    main()
