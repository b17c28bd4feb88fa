"""Accuracy of pruning on MNIST-1D, and effdl next to the peers a user would pick instead.

1. Li et al.'s finding: removing filters with the smallest L1 norm loses less accuracy (before any fine-tuning)
   than removing random ones (10 random seeds) at the same ratio; with the other criteria beside it.
2. 50% of the filters removed + a short fine-tune ends within 1 point of the dense model.
3. Torch-Pruning on the same model, ratio and criterion, with the same fine-tune: accuracy, MACs, latency.
4. Unstructured 90% global magnitude pruning: effdl (zeroed weights + bitmap storage) next to
   torch.nn.utils.prune (weight_orig + weight_mask re-multiplied by a hook on every forward): file size, latency.

Run: .venv/bin/python benchmarks/prune_accuracy.py   (about 2 minutes; needs `pip install effdl[bench]`)
Writes benchmarks/results/prune_accuracy.{md,json}.
"""

from __future__ import annotations

import copy
import io
import statistics
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.utils.prune

from common import write_results
from effdl.core.table import format_table, human_bytes
from effdl.data import get_dataset, make_loader
from effdl.measure import count_macs, measure_latency
from effdl.models import create_model, save_model
from effdl.prune import KeepSparsity, MagnitudePruneConfig, StructuredPruneConfig, prune_, save_sparse
from effdl.train import Trainer, default_train_config, evaluate

MODEL = "cnn1d"
FINETUNE_EPOCHS = 10
RANDOM_SEEDS = 10


def train(model, data, epochs=None):
    cfg = default_train_config(MODEL, progress=False, **({"epochs": epochs} if epochs else {}))
    Trainer(model, cfg).fit(data.train)
    return evaluate(model, data.test)["accuracy"]


def acc(model, data):
    return evaluate(model, data.test)["accuracy"]


def torch_pruning(model, x, ratio):
    import torch_pruning as tp

    model = copy.deepcopy(model)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp.pruner.MagnitudePruner(
            model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio, ignored_layers=[last]
        ).step()
    return model


def interleaved_ratio(a, b, x, rounds=11):
    ratios = []
    for _ in range(rounds):
        ta = measure_latency(a, x, warmup=3, repeats=20, threads=1).median_ms
        tb = measure_latency(b, x, warmup=3, repeats=20, threads=1).median_ms
        ratios.append(ta / tb)
    q = statistics.quantiles(ratios, n=4)
    return statistics.median(ratios), q[0], q[2]


def file_size(obj) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getbuffer().nbytes


def main() -> None:
    torch.manual_seed(0)
    data = get_dataset("mnist1d")
    x = data.example_inputs(2)
    loader = make_loader(data.train, 64, shuffle=True, seed=0)  # for the taylor criterion's gradients
    dense = create_model(MODEL)
    dense_acc = train(dense, data)
    rows, records = [], []
    rows.append(["dense", "-", f"{100 * dense_acc:.2f}%", "-", "-"])
    records.append({"method": "dense", "accuracy": dense_acc})

    # 1. criteria vs random before fine-tuning
    for ratio in (0.25, 0.5):
        rand = []
        for seed in range(RANDOM_SEEDS):
            r = copy.deepcopy(dense)
            prune_(r, StructuredPruneConfig(criterion="random", ratio=ratio, seed=seed), example_inputs=x)
            rand.append(acc(r, data))
        for criterion in ("l1", "l1_raw", "l2", "bn_scale", "taylor"):
            m = copy.deepcopy(dense)
            prune_(
                m,
                StructuredPruneConfig(criterion=criterion, ratio=ratio, num_batches=16),
                example_inputs=x,
                data=loader,
            )
            a = acc(m, data)
            rows.append([f"{criterion}, {ratio:.0%} of filters", "none", f"{100 * a:.2f}%", "-", "-"])
            records.append({"method": criterion, "ratio": ratio, "finetune": 0, "accuracy": a})
        rows.append(
            [
                f"random, {ratio:.0%} ({RANDOM_SEEDS} seeds, mean [min-max])",
                "none",
                f"{100 * statistics.mean(rand):.2f}% [{100 * min(rand):.1f}-{100 * max(rand):.1f}]",
                "-",
                "-",
            ]
        )
        records.append({"method": "random", "ratio": ratio, "finetune": 0, "accuracy": rand})

    # 2 + 3. 50% + the same fine-tune, effdl and Torch-Pruning
    ours = copy.deepcopy(dense)
    prune_(ours, StructuredPruneConfig(criterion="l1", ratio=0.5), example_inputs=x)
    theirs = torch_pruning(dense, x, 0.5)
    x1 = x[:1]
    for label, model in (("effdl L1 50%", ours), ("Torch-Pruning L1 50%", theirs)):
        a = train(model, data, epochs=FINETUNE_EPOCHS)
        sp, lo, hi = interleaved_ratio(dense, model, x1)
        macs = count_macs(dense, x1) / count_macs(model, x1)
        rows.append(
            [label, f"{FINETUNE_EPOCHS} epochs", f"{100 * a:.2f}%", f"{macs:.2f}x", f"{sp:.2f}x [{lo:.2f}-{hi:.2f}]"]
        )
        records.append(
            {"method": label, "finetune": FINETUNE_EPOCHS, "accuracy": a, "mac_ratio": macs, "speedup_b1": [sp, lo, hi]}
        )
    table = format_table(
        rows, ["model", "fine-tune", "test accuracy", "MACs dense/pruned", "latency dense/pruned (b1, 1 thread)"]
    )

    # 4. unstructured: effdl vs torch.nn.utils.prune
    urows = []
    ours_u = copy.deepcopy(dense)
    prune_(ours_u, MagnitudePruneConfig(ratio=0.9, scope="global"), example_inputs=x)
    theirs_u = copy.deepcopy(dense)
    params = [(m, "weight") for m in theirs_u.modules() if isinstance(m, torch.nn.Conv1d | torch.nn.Linear)]
    torch.nn.utils.prune.global_unstructured(params, pruning_method=torch.nn.utils.prune.L1Unstructured, amount=0.9)
    with tempfile.TemporaryDirectory() as tmp:
        sparse_bytes = save_sparse(ours_u, Path(tmp) / "s.safetensors").stat().st_size
        dense_bytes = save_model(dense, Path(tmp) / "d.safetensors").stat().st_size
    torch_bytes = file_size(theirs_u.state_dict())
    sp, lo, hi = interleaved_ratio(theirs_u, ours_u, x[:1])
    sp32, lo32, hi32 = interleaved_ratio(theirs_u, ours_u, data.example_inputs(32))
    a_ours, a_theirs = acc(ours_u, data), acc(theirs_u, data)
    # the same fine-tune for both: effdl keeps its zeros with KeepSparsity, torch.nn.utils.prune with its hooks
    cfg = default_train_config(MODEL, progress=False, epochs=FINETUNE_EPOCHS)
    Trainer(ours_u, cfg, callbacks=[KeepSparsity()]).fit(data.train)
    Trainer(theirs_u, cfg).fit(data.train)
    ft_ours, ft_theirs = acc(ours_u, data), acc(theirs_u, data)
    still_sparse = float((ours_u.features[3].weight == 0).float().mean())
    urows.append(["dense (safetensors)", human_bytes(dense_bytes), "1.00x", f"{100 * dense_acc:.2f}%", "-"])
    urows.append(
        [
            "effdl 90% global (bitmap + values)",
            human_bytes(sparse_bytes),
            f"{dense_bytes / sparse_bytes:.2f}x",
            f"{100 * a_ours:.2f}% / {100 * ft_ours:.2f}%",
            f"{sp:.2f}x [{lo:.2f}-{hi:.2f}] b1; {sp32:.2f}x [{lo32:.2f}-{hi32:.2f}] b32",
        ]
    )
    urows.append(
        [
            "torch.nn.utils.prune 90% global (state_dict)",
            human_bytes(torch_bytes),
            f"{dense_bytes / torch_bytes:.2f}x",
            f"{100 * a_theirs:.2f}% / {100 * ft_theirs:.2f}%",
            "1.00x",
        ]
    )
    records.append(
        {
            "unstructured": True,
            "dense_bytes": dense_bytes,
            "effdl_bytes": sparse_bytes,
            "torch_prune_bytes": torch_bytes,
            "accuracy_effdl": a_ours,
            "accuracy_torch_prune": a_theirs,
            "accuracy_effdl_finetuned": ft_ours,
            "accuracy_torch_prune_finetuned": ft_theirs,
            "effdl_sparsity_after_finetune_features3": still_sparse,
            "latency_torch_prune_over_effdl_b1": [sp, lo, hi],
            "latency_torch_prune_over_effdl_b32": [sp32, lo32, hi32],
        }
    )
    utable = format_table(
        urows,
        [
            "unstructured",
            "file size",
            "dense/size",
            f"accuracy (pruned / +{FINETUNE_EPOCHS} epochs)",
            "latency torch.prune / effdl",
        ],
    )
    notes = [
        f"Model: {MODEL} trained with its default recipe (seed 0) on MNIST-1D (4000 train / 1000 test).",
        "Structured: uniform ratio per group; 'random' averages 10 seeds. l1 folds the BatchNorm after each conv",
        "into its filters (the weights inference uses); l1_raw scores the stored weights. Fine-tuning uses the model's",
        f"training recipe for {FINETUNE_EPOCHS} epochs. Latency ratios: interleaved, 11 rounds, median [IQR].",
        "Unstructured: both zero the same 90% of Conv/Linear weights (global L1), so accuracy agrees before the",
        "fine-tune (the sizes and latencies are measured before it);",
        "torch.nn.utils.prune keeps weight_orig and weight_mask (a larger file than dense) and recomputes the",
        "weight in a hook on every forward; effdl stores a bitmap and the kept values.",
    ]
    print(
        write_results(
            "prune_accuracy", "Pruning accuracy on MNIST-1D, and the peers", notes, table + "\n\n" + utable, records
        )
    )


if __name__ == "__main__":
    main()
