"""Ground truth for zero-cost NAS: trains architectures sampled from the ``mnist1d_cnn`` search space briefly with
one fixed recipe and stores their test accuracies, parameters, MACs and CPU latencies as a small versioned data
file inside the package (``src/effdl/nas/data/mnist1d_cnn_v1.json``), so that proxies can be evaluated without
training (``effdl nas eval``).

Recipe: AdamW, lr 1e-2, weight decay 5e-2 (cnn1d's), cosine, 10 epochs, batch 128, weights seeded with 0.
Latency: batch 1, one thread, median of 30 runs, measured after all training (one process, nothing else running).

Run: .venv/bin/python benchmarks/nas_ground_truth.py [--count 300] [--workers 2]   (about 15 minutes on 2 cores)
On Ray: add --backend ray [--ray-address HOST:PORT] (effdl[ray]); the architectures are the same units.
Resumable: finished architectures are kept in benchmarks/results/nas_ground_truth/ (effdl.nas.train_architectures).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from common import RESULTS, environment
from effdl.measure import count_macs, count_params, measure_latency
from effdl.nas import GROUND_TRUTH_RECIPE, GroundTruthConfig, sample_codes, train_architectures
from effdl.nas.space import get_space
from effdl.scale import ExecutorConfig

SPACE = "mnist1d_cnn"
VERSION = 1
OUT = Path(__file__).parents[1] / "src" / "effdl" / "nas" / "data" / f"{SPACE}_v{VERSION}.json"
PARTIAL = RESULTS / "nas_ground_truth"
RECIPE = GROUND_TRUTH_RECIPE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", default="local", choices=("local", "ray"))
    parser.add_argument("--ray-address", default=None, help="Ray cluster to join (default: start Ray here)")
    args = parser.parse_args()
    codes = sample_codes(SPACE, args.count, args.seed)
    executor = ExecutorConfig(backend=args.backend, workers=args.workers, address=args.ray_address, threads=1)
    trained = train_architectures(codes, GroundTruthConfig(space=SPACE, recipe=RECIPE), executor=executor,
                                  out_dir=PARTIAL)  # fmt: skip
    if trained.failures:
        raise SystemExit("failed: " + "; ".join(f"{f.key}: {f.error}" for f in trained.failures))
    done = {r["arch"]: r for r in trained.records}
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
