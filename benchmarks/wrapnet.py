"""Low-bit accumulators (WrapNet, Ni et al., ICLR 2021) on MNIST-1D: accuracy against accumulator width for
naive wrap-around, saturation, and wrap-aware training (cyclic activation + overflow penalty).

A cnn1d with 4-bit weights and activations (W4A4, learned step sizes) is trained with QAT and 32-bit
accumulators. It is then evaluated with b-bit accumulators that wrap around (two's complement) or saturate, without
retraining; and it is fine-tuned with b-bit wrap-around accumulators in the forward pass, WrapNet's cyclic
activation after each, and the overflow penalty in the loss. Every accuracy is also checked against the integer
engine (pure integer arithmetic, same accumulator width) on the test set. Medians over seeds.

Run: .venv/bin/python benchmarks/wrapnet.py   (about 6 minutes)
Writes benchmarks/results/wrapnet.{md,json}.
"""

from __future__ import annotations

import copy
import statistics

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
PENALTY = 10.0
SEEDS = (0, 1, 2)


def engine_accuracy(model, data, bits):
    engine = IntegerEngine(model, accumulator_bits=bits)
    x, y = data.test.tensors
    pred = engine(x).argmax(1)
    return float((pred == y).float().mean()), engine


def with_accumulators(base_state, x, calib, bits, mode, cyclic=False):
    model = create_model(MODEL).eval()
    cfg = QuantConfig(bits_w=BITS_W, bits_a=BITS_A, accumulator_bits=bits, accumulator_mode=mode, cyclic=cyclic,
                      observer="moving_average", lsq=True)  # fmt: skip
    quantize_(model, cfg, example_inputs=x, data=calib)
    missing, unexpected = model.load_state_dict(base_state, strict=False)
    assert not unexpected and all(k.endswith(("overflows", "total")) for k in missing)
    return model


def run_seed(seed, data):
    torch.manual_seed(seed)
    cfg = default_train_config(MODEL, progress=False).replace(seed=seed)
    qat = cfg.replace(epochs=EPOCHS, lr=1e-3, optimizer="adam", weight_decay=0.0)
    x = data.example_inputs(64)
    calib = make_loader(data.train, 256, shuffle=True, seed=seed)
    fp32 = create_model(MODEL)
    Trainer(fp32, cfg).fit(data.train)
    base = copy.deepcopy(fp32).eval()
    qc = QuantConfig(bits_w=BITS_W, bits_a=BITS_A, observer="moving_average", lsq=True)
    quantize_(base, qc, example_inputs=x, data=calib)
    Trainer(base, qat).fit(data.train)
    state = base.state_dict()
    engine32, eng = engine_accuracy(base, data, 32)
    rec = {
        "seed": seed,
        "fp32": evaluate(fp32, data.test)["accuracy"],
        "qat, 32-bit accumulators": evaluate(base, data.test)["accuracy"],
        "qat, integer engine": engine32,
        "bits needed": {n: s.bits_needed for n, s in eng.stats.items()},
        "widths": [],
    }
    for bits in ACC_BITS:
        w = {"accumulator_bits": bits}
        for mode in ("wrap", "saturate"):
            w[mode] = evaluate(with_accumulators(state, x, calib, bits, mode), data.test)["accuracy"]
        m = with_accumulators(state, x, calib, bits, "wrap", cyclic=True)
        Trainer(m, qat, callbacks=[OverflowPenalty(PENALTY)]).fit(data.train)
        w["wrap-aware"] = evaluate(m, data.test)["accuracy"]
        w["wrap-aware (integer engine)"], _ = engine_accuracy(m, data, bits)
        w["overflow rate, naive wrap"] = _overflow_rate(with_accumulators(state, x, calib, bits, "wrap"), data)
        w["overflow rate, wrap-aware"] = _overflow_rate(m, data)
        rec["widths"].append(w)
    return rec


def main() -> None:
    data = get_dataset("mnist1d")
    records = [run_seed(seed, data) for seed in SEEDS]

    def med(key, i=None):
        return statistics.median(r[key] if i is None else r["widths"][i][key] for r in records)

    rows = []
    for i, bits in enumerate(ACC_BITS):
        rows.append([
            bits,
            f"{100 * med('wrap', i):.2f}%",
            f"{100 * med('saturate', i):.2f}%",
            f"{100 * med('wrap-aware', i):.2f}%",
            f"{100 * med('wrap-aware (integer engine)', i):.2f}%",
            f"{100 * med('overflow rate, naive wrap', i):.2f}% / {100 * med('overflow rate, wrap-aware', i):.3f}%",
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
        f"Model {MODEL} on MNIST-1D, W{BITS_W}A{BITS_A} (weights per channel, activations per tensor, learned",
        f"step sizes), BatchNorm folded. Medians over seeds {list(SEEDS)}. fp32: {100 * med('fp32'):.2f}%.",
        f"W{BITS_W}A{BITS_A} QAT with 32-bit accumulators: {100 * med('qat, 32-bit accumulators'):.2f}%",
        f"(integer engine: {100 * med('qat, integer engine'):.2f}%). Width needed per layer (seed {SEEDS[0]}):",
        f"{records[0]['bits needed']}. naive wrap / saturate: that model evaluated with b-bit accumulators.",
        f"wrap-aware: fine-tuned {EPOCHS} epochs (Adam 1e-3) with b-bit wrap-around in the forward pass",
        "(straight-through backward), the cyclic activation (knee 1/2) after every accumulator and the overflow",
        f"penalty (weight {PENALTY}). Overflow rates: share of accumulator outputs out of range on the test set.",
    ]
    title = "Low-bit accumulators: accuracy against accumulator width"
    print(write_results("wrapnet", title, notes, table, records))


def _overflow_rate(model, data) -> float:
    from effdl.quant import Accumulator

    accs = [m for m in model.modules() if isinstance(m, Accumulator)]
    for a in accs:
        a.reset_stats()
    evaluate(model, data.test)
    return sum(int(a.overflows) for a in accs) / max(sum(int(a.total) for a in accs), 1)


if __name__ == "__main__":
    main()
