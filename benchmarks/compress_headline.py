"""The headline: the default recipe (`effdl compress default`: remove half of the channels by L1 norm, fine-tune 10
epochs distilling from the original, then real int8 in the faster runtime at batch 32) on the reference models.

MNIST-1D cnn1d and digits cnn2d are trained first with their recommended settings (seed 0). ResNet-20 at 32x32 is
there for speed only: CIFAR-10 is not available offline, so it runs untrained on Gaussian inputs labelled by
itself (its accuracy column is top-1 agreement with the uncompressed model) and its fine-tune is cut to 1 epoch.
Latency: every stage timed side by side at the end of the run (interleaved rounds, medians), batch 32; size: the
saved file (safetensors for float models, the int8 file for the last stage).

Run: .venv/bin/python benchmarks/compress_headline.py   (about 3 minutes)
Writes benchmarks/results/compress_headline.{md,json} and compress_headline_<model>.png (the Pareto plots).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from common import RESULTS, write_results
from effdl.compress import Recipe, compress_model
from effdl.core.table import format_table, human_bytes
from effdl.data import DatasetSplits, get_dataset
from effdl.measure import MeasureConfig
from effdl.models import create_model
from effdl.train import Trainer, default_train_config


def synthetic(model, n_train=1024, n_test=512) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    shape = tuple(model.effdl_spec["input_shape"])
    x_train, x_test = torch.randn(n_train, *shape, generator=g), torch.randn(n_test, *shape, generator=g)
    with torch.no_grad():
        y_train, y_test = model.eval()(x_train).argmax(1), model(x_test).argmax(1)
    return DatasetSplits("gaussian-32x32", TensorDataset(x_train, y_train), TensorDataset(x_test, y_test), shape, 10)


def main() -> None:
    recipe = Recipe.load("default")
    cases = []
    for name, data_name in (("cnn1d", "mnist1d"), ("cnn2d", "digits")):
        data = get_dataset(data_name)
        torch.manual_seed(0)
        model = create_model(name, input_shape=data.input_shape, num_classes=data.num_classes)
        Trainer(model, default_train_config(name, progress=False)).fit(data.train)
        cases.append((name, data, model.eval(), recipe, "test accuracy"))
    torch.manual_seed(0)
    resnet = create_model("resnet20").eval()
    short = Recipe.from_dict({**recipe.to_dict(), "name": "default, 1-epoch fine-tune"})
    short.steps[1] = short.steps[1].replace(train={**short.steps[1].train, "epochs": 1})
    cases.append(("resnet20 (32x32, speed only)", synthetic(resnet), resnet, short, "agreement"))
    rows, records = [], []
    for label, data, model, rec, metric in cases:
        with tempfile.TemporaryDirectory() as tmp:
            result = compress_model(model, data, rec, out_dir=tmp, measure=MeasureConfig(batch_size=32, repeats=30),
                                    progress=False)
            key = label.split(" ")[0]
            shutil.copy(Path(tmp) / "pareto.png", RESULTS / f"compress_headline_{key}.png")
            report_md = (Path(tmp) / "report.md").read_text()
        base, final = result.stages[0], result.stages[-1]
        lat = result.deployment.stage_latency_ms
        speed = lat["baseline"]["median"] / lat[final.name]["median"]
        smaller = base.summary.size_bytes / final.summary.size_bytes
        records.append({
            "model": label, "metric": metric, "recipe": rec.to_dict(), "stages": [s.to_dict() for s in result.stages],
            "deployment": result.deployment.to_dict(), "smaller": smaller, "faster_b32": speed, "report": report_md,
        })  # fmt: skip
        rows.append([
            label,
            f"{100 * base.summary.accuracy:.2f}% -> {100 * final.summary.accuracy:.2f}% ({metric})",
            f"{human_bytes(base.summary.size_bytes)} -> {human_bytes(final.summary.size_bytes)}",
            f"{smaller:.2f}x",
            f"{lat['baseline']['median']:.3f} -> {lat[final.name]['median']:.3f} ms",
            f"{speed:.2f}x",
            result.deployment.best,
        ])  # fmt: skip
        print(rows[-1], flush=True)
    headers = ["model", "accuracy before -> after", "size", "smaller", "latency b32", "faster", "runtime"]
    table = format_table(rows, headers, align="llrrrrl")
    notes = [
        "Recipe `default` (recipes/default.yaml): L1 structured pruning of 50% of the channels (through residual",
        "dependencies), fine-tune 10 epochs with the model's recommended settings and KD from the original (alpha",
        "0.5, T 4), then int8 with the runtime (torch.ao x86 or onnxruntime) that is faster at batch 32.",
        "cnn1d / cnn2d: trained first (seed 0, recommended settings). resnet20: untrained, Gaussian inputs labelled",
        "by itself, fine-tune cut to 1 epoch: a speed and size check only. Latency: all stages timed side by side",
        "(interleaved rounds) at the end of each run, medians, batch 32. Size: the saved files.",
        "Per-stage tables: the `report` field of compress_headline.json; Pareto plots: compress_headline_*.png.",
    ]
    print(write_results("compress_headline", "Compression headline: the default recipe", notes, table, records))


if __name__ == "__main__":
    main()
