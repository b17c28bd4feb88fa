"""Post-training int8 on the CPU: effdl's convert_int8 (runtime chosen by timing at each batch size) against fp32
and against the peers a user would reach for directly, in the same run: torch.ao FX graph mode with torch's
default x86 qconfig, onnxruntime's quantize_static with its default settings, and onnxruntime fp32.

Models: ResNet-20 and VGG-11 (32x32 inputs; untrained here, since CIFAR-10 is not available offline, so the
accuracy column is replaced by top-1 agreement with fp32 on held-out random inputs), a wide MLP (40-1024-1024-10)
and the reference cnn1d, both trained on MNIST-1D (test accuracy). Latency: every runtime timed in a shuffled
order each round (interleaved, so load from other work hits all alike); medians of per-round ratios to fp32, with
the interquartile range, at batch 1 and 32.

Run: .venv/bin/python benchmarks/ptq_int8.py   (about 6 minutes; needs `pip install effdl[bench]`)
Writes benchmarks/results/ptq_int8.{md,json}.
"""

from __future__ import annotations

import copy
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from common import write_results
from effdl.core.table import format_table
from effdl.data import get_dataset
from effdl.data.loaders import make_loader
from effdl.export import export_onnx
from effdl.models import create_model, save_model
from effdl.quant import Int8Config, convert_int8
from effdl.quant.int8 import _quiet
from effdl.train import Trainer, default_train_config, evaluate

ROUNDS = 12
BATCHES = (1, 32)
CALIB = 8


def ao_direct(model, calib):
    """torch.ao as its docs show it: default x86 qconfig mapping, prepare_fx, calibrate, convert_fx."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with _quiet():
        p = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (calib[0],))
        with torch.no_grad():
            for x in calib:
                p(x)
        return convert_fx(p)


def ort_sessions(model, calib, tmp: Path):
    """onnxruntime: fp32 session and quantize_static with default arguments."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    fp32 = tmp / "fp32.onnx"
    export_onnx(model, calib[0], fp32)
    name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: x.numpy()} for x in calib])

        def get_next(self):
            return next(self.it, None)

    with _quiet():
        quantize_static(str(fp32), str(tmp / "int8.onnx"), Reader())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as effdl does: see int8._session
    sessions = {}
    for key, path in (("onnxruntime fp32", fp32), ("onnxruntime int8 (direct)", tmp / "int8.onnx")):
        s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        sessions[key] = lambda x, s=s: torch.from_numpy(s.run(None, {name: x.numpy()})[0])
    return sessions, (tmp / "int8.onnx").stat().st_size


def interleaved(fns, x):
    times = {k: [] for k in fns}
    order = list(fns)
    rng = random.Random(0)
    with torch.inference_mode():
        for fn in fns.values():
            for _ in range(3):
                fn(x)
        calls = max(1, int(0.05 / max(_once(fns["fp32"], x), 1e-5)))
        for _ in range(ROUNDS):
            rng.shuffle(order)
            for k in order:
                t0 = time.perf_counter()
                for _ in range(calls):
                    fns[k](x)
                times[k].append((time.perf_counter() - t0) / calls)
    return {k: [times["fp32"][i] / times[k][i] for i in range(ROUNDS)] for k in fns}


def _once(fn, x):
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def trained(name, data, **kwargs):
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    cfg = default_train_config("mlp" if name == "mlp" else name, progress=False)
    Trainer(model, cfg.replace(epochs=min(cfg.epochs, 20))).fit(data.train)
    return model.eval()


def main() -> None:
    warnings.filterwarnings("ignore")
    mnist = get_dataset("mnist1d")
    g = torch.Generator().manual_seed(0)
    cases = [
        ("ResNet-20 (32x32)", create_model("resnet20").eval(), None),
        ("VGG-11 (32x32)", create_model("vgg11").eval(), None),
        ("wide MLP 40-1024-1024-10", trained("mlp", mnist, hidden=(1024, 1024)), mnist),
        ("cnn1d", trained("cnn1d", mnist), mnist),
    ]
    rows, records = [], []
    for label, model, data in cases:
        shape = model.effdl_spec["input_shape"]
        if data is None:
            calib = [torch.randn(32, *shape, generator=g) for _ in range(CALIB)]
            test = torch.randn(512, *shape, generator=g)
        else:
            loader = make_loader(data.train, 32, shuffle=True, seed=0)
            calib = [b[0] for _, b in zip(range(CALIB), loader, strict=False)]
        rec = {"model": label}
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            fp32_size = save_model(model, tmp / "fp32.safetensors").stat().st_size
            ao = ao_direct(model, calib)
            ort, ort_size = ort_sessions(model, calib, tmp)
            effdl = {
                b: convert_int8(model, Int8Config(), example_inputs=calib[0], data=calib, batch_size=b) for b in BATCHES
            }
            rec["effdl runtime"] = {b: q.runtime for b, q in effdl.items()}
            rec["size fp32"] = fp32_size
            rec["size effdl int8"] = effdl[32].save(tmp / "q").stat().st_size
            rec["size onnxruntime int8"] = ort_size
            for b in BATCHES:
                x = calib[0][:1].expand(b, *shape).contiguous() if b <= 32 else None
                fns = {"fp32": model, "effdl int8": effdl[b], "torch.ao (direct)": ao, **ort}
                ratios = interleaved(fns, x)
                rec[f"b{b}"] = {k: statistics.median(v) for k, v in ratios.items()}
                rec[f"b{b} iqr"] = {k: _iqr(v) for k, v in ratios.items()}
            q = effdl[32]
            direct = ort["onnxruntime int8 (direct)"]
            if data is not None:
                acc = {
                    "fp32": evaluate(model, data.test)["accuracy"],
                    "effdl int8": evaluate(q, data.test)["accuracy"],
                    "torch.ao (direct)": evaluate(ao, data.test)["accuracy"],
                    "onnxruntime int8 (direct)": evaluate(_Wrap(direct), data.test)["accuracy"],
                }
            else:
                with torch.no_grad():
                    ref = model(test).argmax(1)
                    acc = {"fp32": 1.0}
                    for key, fn in (
                        ("effdl int8", q),
                        ("torch.ao (direct)", ao),
                        ("onnxruntime int8 (direct)", direct),
                    ):
                        acc[key] = float((fn(test).argmax(1) == ref).float().mean())
            rec["accuracy" if data is not None else "agreement"] = acc
        records.append(rec)
        kind = "acc" if data is not None else "agree"
        for k in ("effdl int8", "torch.ao (direct)", "onnxruntime int8 (direct)", "onnxruntime fp32"):
            size = {"effdl int8": rec["size effdl int8"], "onnxruntime int8 (direct)": ort_size}.get(k)
            rows.append([
                label,
                k + (f" [{rec['effdl runtime'][1]} / {rec['effdl runtime'][32]}]" if k == "effdl int8" else ""),
                f"{rec['b1'][k]:.2f}x [{rec['b1 iqr'][k]}]",
                f"{rec['b32'][k]:.2f}x [{rec['b32 iqr'][k]}]",
                f"{size / fp32_size:.2f}" if size else "-",
                f"{kind} {100 * acc[k]:.2f}% (fp32 {100 * acc['fp32']:.2f}%)" if k in acc else "-",
            ])  # fmt: skip
        print(rows[-4:])
    headers = ["model", "runtime [effdl's pick at b1 / b32]", "b1 speedup vs fp32", "b32 speedup vs fp32",
               "size / fp32", "accuracy or top-1 agreement"]  # fmt: skip
    table = format_table(rows, headers, align="llrrrl")
    notes = [
        "Speedup: median over rounds of fp32 time / runtime time, same inputs, [interquartile range]. fp32 is",
        f"PyTorch eager. {ROUNDS} rounds, runtimes in a shuffled order each round. Calibration: {CALIB} batches of",
        "32 (training data for the MNIST-1D models, Gaussian inputs for the untrained 32x32 models). effdl int8 is",
        "convert_int8 with Int8Config() (runtime 'auto': each runtime timed at the serving batch size; min-max",
        "observers, per-channel weights); its size is the saved file. torchao was not compared: its int8 CPU path",
        "needs torch.compile/inductor and is built for LLM Linear layers (PT2E broke on a Conv1d net here).",
        "Every onnxruntime session runs with intra-op spinning off: spinning pool threads slowed the PyTorch runs",
        "timed after them 2x on this 2-core machine, which made earlier runs of this benchmark meaningless.",
    ]
    print(write_results("ptq_int8", "Post-training int8 on the CPU: effdl vs fp32 and peers", notes, table, records))


class _Wrap(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _iqr(values):
    q = statistics.quantiles(values, n=4)
    return f"{q[0]:.2f}-{q[2]:.2f}"


if __name__ == "__main__":
    main()
