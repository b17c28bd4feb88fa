"""Low-bit accumulators (WrapNet, Ni et al., ICLR 2021) on MNIST-1D: accuracy against accumulator width for
naive wrap-around, saturation, and wrap-aware training (cyclic activation + overflow penalty).

A cnn1d with 4-bit weights and activations (W4A4) is trained with QAT and 32-bit accumulators. It is then
evaluated with b-bit accumulators that wrap around (two's complement) or saturate, without retraining; and it is
fine-tuned with b-bit wrap-around accumulators in the forward pass, WrapNet's cyclic activation after each, and the
overflow penalty in the loss. Every accuracy is also checked against the integer engine (pure integer arithmetic,
same accumulator width) on the test set.

Run: .venv/bin/python benchmarks/wrapnet.py   (about 5 minutes)
Writes benchmarks/results/wrapnet.{md,json}.
"""

from __future__ import annotations

import copy

import torch

from common import write_results
from effdl.core.table import format_table
from effdl.data import get_dataset
from effdl.data.loaders import make_loader
from effdl.models import create_model
from effdl.quant import IntegerEngine, OverflowPenalty, QuantConfig, quantize_
from effdl.train import Trainer, default_train_config, evaluate

MODEL = "cnn1d"
BITS_W, BITS_A = 4, 4
ACC_BITS = (8, 10, 12, 16, 32)
EPOCHS = 15
PENALTY = 0.1


def engine_accuracy(model, data, bits):
    engine = IntegerEngine(model, accumulator_bits=bits)
    x, y = data.test.tensors
    pred = engine(x).argmax(1)
    return float((pred == y).float().mean()), engine


def with_accumulators(base_state, x, calib, bits, mode, cyclic=False):
    model = create_model(MODEL).eval()
    cfg = QuantConfig(bits_w=BITS_W, bits_a=BITS_A, accumulator_bits=bits, accumulator_mode=mode, cyclic=cyclic,
                      observer="moving_average")  # fmt: skip
    quantize_(model, cfg, example_inputs=x, data=calib)
    missing, unexpected = model.load_state_dict(base_state, strict=False)
    assert not unexpected and all(k.endswith(("overflows", "total")) for k in missing)
    return model


def main() -> None:
    torch.manual_seed(0)
    data = get_dataset("mnist1d")
    cfg = default_train_config(MODEL, progress=False)
    qat = cfg.replace(epochs=EPOCHS, lr=1e-3, optimizer="adam", weight_decay=0.0)
    x = data.example_inputs(64)
    calib = make_loader(data.train, 256, shuffle=True, seed=0)
    fp32 = create_model(MODEL)
    Trainer(fp32, cfg).fit(data.train)
    base = copy.deepcopy(fp32).eval()
    quantize_(base, QuantConfig(bits_w=BITS_W, bits_a=BITS_A, observer="moving_average"), example_inputs=x, data=calib)
    Trainer(base, qat).fit(data.train)
    base_acc = evaluate(base, data.test)["accuracy"]
    state = base.state_dict()
    engine32, eng = engine_accuracy(base, data, 32)
    need = {n: s.bits_needed for n, s in eng.stats.items()}
    rows, records = [], []
    for bits in ACC_BITS:
        rec = {"accumulator_bits": bits}
        for mode in ("wrap", "saturate"):
            m = with_accumulators(state, x, calib, bits, mode)
            rec[mode] = evaluate(m, data.test)["accuracy"]
        m = with_accumulators(state, x, calib, bits, "wrap", cyclic=True)
        Trainer(m, qat.replace(epochs=EPOCHS), callbacks=[OverflowPenalty(PENALTY)]).fit(data.train)
        rec["wrap-aware"] = evaluate(m, data.test)["accuracy"]
        rec["wrap-aware (integer engine)"], eng = engine_accuracy(m, data, bits)
        rec["overflow rate, naive wrap"] = _overflow_rate(with_accumulators(state, x, calib, bits, "wrap"), data)
        rec["overflow rate, wrap-aware"] = _overflow_rate(m, data)
        records.append(rec)
        rows.append([
            bits,
            f"{100 * rec['wrap']:.2f}%",
            f"{100 * rec['saturate']:.2f}%",
            f"{100 * rec['wrap-aware']:.2f}%",
            f"{100 * rec['wrap-aware (integer engine)']:.2f}%",
            f"{100 * rec['overflow rate, naive wrap']:.2f}% / {100 * rec['overflow rate, wrap-aware']:.2f}%",
        ])  # fmt: skip
    headers = [
        "acc. bits",
        "naive wrap",
        "saturate",
        "wrap-aware",
        "wrap-aware, integer engine",
        "overflows naive / aware",
    ]
    table = format_table(rows, headers, align="rrrrrr")
    notes = [
        f"Model {MODEL} on MNIST-1D, W{BITS_W}A{BITS_A} (weights per channel, activations per tensor), BatchNorm",
        f"folded. fp32: {100 * evaluate(fp32, data.test)['accuracy']:.2f}%. W{BITS_W}A{BITS_A} QAT with 32-bit",
        f"accumulators: {100 * base_acc:.2f}% (integer engine: {100 * engine32:.2f}%). Largest accumulator width",
        f"needed per layer: {need}. naive wrap / saturate: that model evaluated with b-bit accumulators. wrap-aware:",
        f"fine-tuned {EPOCHS} epochs (Adam 1e-3) with b-bit wrap-around in the forward pass (straight-through",
        "backward), the cyclic activation (knee 1/2) after every accumulator and the overflow penalty (weight",
        f"{PENALTY}). Overflow rates: share of accumulator outputs out of range on the test set.",
    ]
    print(write_results("wrapnet", "Low-bit accumulators: accuracy against accumulator width", notes, table, records))


def _overflow_rate(model, data) -> float:
    from effdl.quant import Accumulator

    accs = [m for m in model.modules() if isinstance(m, Accumulator)]
    for a in accs:
        a.reset_stats()
    evaluate(model, data.test)
    return sum(int(a.overflows) for a in accs) / max(sum(int(a.total) for a in accs), 1)


if __name__ == "__main__":
    main()
