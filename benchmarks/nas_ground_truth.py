"""Ground truth for zero-cost NAS: trains architectures sampled from the ``mnist1d_cnn`` search space briefly with
one fixed recipe and stores their test accuracies, parameters, MACs and CPU latencies as a small versioned data
file inside the package (``src/effdl/nas/data/mnist1d_cnn_v1.json``), so that proxies can be evaluated without
training (``effdl nas eval``).

Recipe: AdamW, lr 1e-2, weight decay 5e-2 (cnn1d's), cosine, 10 epochs, batch 128, weights seeded with 0.
Latency: batch 1, one thread, median of 30 runs, measured after all training (one process, nothing else running).

Run: .venv/bin/python benchmarks/nas_ground_truth.py [--count 300] [--workers 2]   (about 15 minutes on 2 cores)
Resumable: finished architectures are kept in benchmarks/results/nas_ground_truth.partial.jsonl.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import multiprocessing
import time
from pathlib import Path

import torch

from common import RESULTS, environment
from effdl.data import get_dataset
from effdl.measure import count_macs, count_params, measure_latency
from effdl.nas.space import get_space
from effdl.train import TrainConfig, Trainer, evaluate

SPACE = "mnist1d_cnn"
VERSION = 1
OUT = Path(__file__).parents[1] / "src" / "effdl" / "nas" / "data" / f"{SPACE}_v{VERSION}.json"
PARTIAL = RESULTS / "nas_ground_truth.partial.jsonl"
RECIPE = {"epochs": 10, "batch_size": 128, "optimizer": "adamw", "lr": 1e-2, "weight_decay": 5e-2,
          "schedule": "cosine", "seed": 0}  # fmt: skip


def sample(count: int, seed: int) -> list[str]:
    space = get_space(SPACE)
    g = torch.Generator().manual_seed(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen.setdefault(space.sample(g).encode())
    return list(seen)


def train_one(code: str) -> dict:
    torch.set_num_threads(1)
    data = get_dataset("mnist1d")
    space = get_space(SPACE)
    torch.manual_seed(0)
    model = space.build(code)
    t0 = time.perf_counter()
    Trainer(model, TrainConfig(**RECIPE, eval_every=RECIPE["epochs"], progress=False)).fit(data.train)
    return {
        "arch": code,
        "test_accuracy": evaluate(model, data.test)["accuracy"],
        "train_accuracy": evaluate(model, data.train)["accuracy"],
        "train_seconds": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    codes = sample(args.count, args.seed)
    done = {}
    if PARTIAL.exists():
        for line in PARTIAL.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["arch"]] = rec
    todo = [c for c in codes if c not in done]
    print(f"{len(done)} done, {len(todo)} to train", flush=True)
    ctx = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool, PARTIAL.open("a") as fh:
        for i, rec in enumerate(pool.map(train_one, todo), 1):
            done[rec["arch"]] = rec
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            print(f"[{i}/{len(todo)}] {rec['arch']}: {100 * rec['test_accuracy']:.1f}%", flush=True)
    space = get_space(SPACE)
    x = torch.zeros(1, *space.input_shape)
    records = []
    for code in codes:
        torch.manual_seed(0)
        model = space.build(code).eval()
        lat = measure_latency(model, (x,), threads=1, repeats=30, warmup=5)
        records.append({**done[code], "params": count_params(model), "macs": count_macs(model, x),
                        "latency_ms": lat.median_ms})  # fmt: skip
    doc = {
        "name": f"{SPACE}_v{VERSION}",
        "space": SPACE,
        "dataset": "mnist1d (4000 train / 1000 test, generated offline)",
        "recipe": RECIPE,
        "sample_seed": args.seed,
        "latency": "batch 1, 1 thread, median of 30 runs, " + environment(),
        "created": time.strftime("%Y-%m-%d"),
        "architectures": records,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    accs = sorted(r["test_accuracy"] for r in records)
    print(f"wrote {OUT}: {len(records)} architectures, test accuracy {100 * accs[0]:.1f}% .. {100 * accs[-1]:.1f}%")


if __name__ == "__main__":
    main()
