"""The multi-task studies behind ``effdl multitask``: single-task models against hard sharing and AdaShare (per-task
metrics, multi-task gain, parameters and MACs, the learned sharing pattern), and label-budget allocations trained
and scored side by side. Each finished model's figures are kept in the output folder, so a rerun continues."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from effdl.core.config import check_range
from effdl.core.io import atomic_write_json
from effdl.core.plot import saved_figure
from effdl.core.table import format_table
from effdl.measure import count_macs
from effdl.multitask.adashare import AdaShareConfig, sharing_by_depth, train_adashare
from effdl.multitask.budget import (
    ALLOCATIONS,
    LabelledSubsets,
    adaptive_allocation,
    fixed_allocation,
    pilot_gains,
)
from effdl.multitask.model import MultiTaskNet
from effdl.multitask.tasks import TaskSpec
from effdl.multitask.training import MultiTaskConfig, delta_mtl, evaluate_multitask, train_multitask

__all__ = ["AllocationComparison", "SharingComparison", "compare_allocations", "compare_sharing"]

log = logging.getLogger(__name__)


def _cached(path: Path | None, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    result = compute()
    if path is not None:
        atomic_write_json(path, result)
    return result


def _sub(out: Path | None, name: str) -> Path | None:
    return out / name if out is not None else None


@dataclasses.dataclass
class SharingComparison:
    """Per method (``single-task``, ``hard sharing``, ``AdaShare``): each task's metric, the multi-task gain against
    the single-task models, parameters and MACs per image (all tasks); AdaShare's policy."""

    specs: dict[str, TaskSpec]
    rows: dict[str, dict[str, Any]]
    policy: list[list[int]]
    select_probabilities: list[list[float]]

    def sharing_by_depth(self) -> list[float]:
        """Per block, the share of task pairs that both execute it."""
        return sharing_by_depth(self.policy)

    def to_table(self) -> str:
        """Methods by tasks, with the multi-task gain, parameters and MACs."""
        names = list(self.specs)
        headers = ["method", *(f"{t} ({s.metric_name})" for t, s in self.specs.items()), "delta MTL", "params",
                   "MACs/image"]  # fmt: skip
        rows = []
        for method, r in self.rows.items():
            rows.append([method, *(f"{r['metrics'][t]:.4g}" for t in names), f"{r['delta_mtl']:+.2f}%",
                         f"{r['params']:,}", f"{r['macs']:,}"])  # fmt: skip
        return format_table(rows, headers, align="l" + "r" * (len(headers) - 1))

    def policy_table(self) -> str:
        """Tasks by blocks: ``x`` executed, ``.`` skipped, with the select probabilities."""
        triples = zip(self.specs, self.policy, self.select_probabilities, strict=True)
        rows = [[t, *(f"{'x' if g else '.'} {p:.2f}" for g, p in zip(gates, probs, strict=True))]
                for t, gates, probs in triples]  # fmt: skip
        share = ["shared by", *(f"{s:.0%}" for s in self.sharing_by_depth())]
        blocks = len(self.policy[0])
        return format_table([*rows, share], ["task", *(f"block {b + 1}" for b in range(blocks))],
                            align="l" + "c" * blocks)  # fmt: skip

    def plot(self, path: str | os.PathLike) -> Path:
        """The learned sharing pattern (tasks by blocks, executed blocks dark, the select probability written in)
        and the share of task pairs sharing each block."""
        gates = torch.tensor(self.policy, dtype=torch.float32)
        probs = self.select_probabilities
        with saved_figure(path, size=(8, 3.8), ncols=2, gridspec_kw={"width_ratios": [3, 2]}) as (_, (ax, bx)):
            ax.imshow(gates.numpy(), cmap="Greys", vmin=-0.3, vmax=1.3, aspect="auto")
            for t in range(gates.shape[0]):
                for b in range(gates.shape[1]):
                    ax.text(b, t, f"{probs[t][b]:.2f}", ha="center", va="center",
                            color="white" if gates[t, b] else "black", fontsize=8)  # fmt: skip
            ax.set_yticks(range(len(self.specs)), list(self.specs))
            ax.set_xticks(range(gates.shape[1]), [str(b + 1) for b in range(gates.shape[1])])
            ax.set_xlabel("residual block (dark: executed; p(select) written)")
            ax.set_title("AdaShare policy per task")
            bx.bar(range(1, gates.shape[1] + 1), self.sharing_by_depth(), color="tab:blue")
            bx.set_ylim(0, 1)
            bx.set_xlabel("residual block")
            bx.set_ylabel("task pairs sharing the block")
            bx.set_title("sharing by depth")
        return Path(path)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return {"rows": self.rows, "policy": self.policy, "select_probabilities": self.select_probabilities,
                "sharing_by_depth": self.sharing_by_depth()}  # fmt: skip


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n != "policy_logits")


def compare_sharing(
    train: Dataset,
    test: Dataset,
    specs: Mapping[str, TaskSpec],
    config: MultiTaskConfig | None = None,
    adashare: AdaShareConfig | None = None,
    *,
    widths: Sequence[int] = (16, 16, 32, 32, 32, 32),
    strides: Sequence[int] | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = False,
) -> SharingComparison:
    """Trains one single-task network per task, one hard-sharing network and AdaShare (its retraining runs as many
    epochs as the others), all on ``train`` with the same settings, and scores them on ``test``. With ``out_dir``
    each model trains in its own folder and its figures are kept: a rerun skips finished models and (with
    ``resume=True``) continues a killed training.

    Example:
        >>> from effdl.data import load_scenes
        >>> from effdl.multitask.tasks import scene_task_specs
        >>> s = load_scenes(train=8, val=2, test=4, size=16)
        >>> specs = {k: v for k, v in scene_task_specs().items() if k in ("segment", "count")}
        >>> c = compare_sharing(s.train.dataset(tuple(specs)), s.test.dataset(tuple(specs)), specs,
        ...                     MultiTaskConfig(epochs=1, batch_size=8), AdaShareConfig(warmup_epochs=0,
        ...                     policy_epochs=1, retrain_epochs=1), widths=(8, 8))
        >>> list(c.rows)
        ['single-task', 'hard sharing', 'AdaShare']
    """
    config = config or MultiTaskConfig()
    adashare = adashare or AdaShareConfig(retrain_epochs=config.epochs)
    specs = dict(specs)
    out = Path(out_dir) if out_dir is not None else None
    example = next(iter(torch.utils.data.DataLoader(test, batch_size=1)))[0]
    kw = {"widths": widths, "strides": strides}

    def fit(tasks: Mapping[str, TaskSpec], folder: Path | None) -> dict[str, Any]:
        torch.manual_seed(config.seed)
        net = MultiTaskNet(tasks, **kw)
        data = _TaskView(train, tuple(tasks))
        train_multitask(net, data, config, out_dir=folder, resume=resume, progress=progress)
        return {"metrics": evaluate_multitask(net, _TaskView(test, tuple(tasks))), "params": _params(net),
                "macs": count_macs(net, example)}  # fmt: skip

    single: dict[str, Any] = {"metrics": {}, "params": 0, "macs": 0}
    for t in specs:
        r = _cached(_sub(out, f"single-{t}.json"), lambda t=t: fit({t: specs[t]}, _sub(out, f"single-{t}")))
        single["metrics"][t] = r["metrics"][t]
        single["params"] += r["params"]
        single["macs"] += r["macs"]
    hard = _cached(_sub(out, "hard.json"), lambda: fit(specs, _sub(out, "hard")))

    def fit_adashare() -> dict[str, Any]:
        result = train_adashare(specs, train, adashare, config, out_dir=_sub(out, "adashare"), resume=resume,
                                progress=progress, **kw)  # fmt: skip
        net = result.model
        return {"metrics": evaluate_multitask(net, test), "params": _params(net), "macs": count_macs(net, example),
                "policy": result.policy.int().tolist(),
                "select_probabilities": result.select_probabilities.tolist()}  # fmt: skip

    ada = _cached(_sub(out, "adashare.json"), fit_adashare)
    rows = {}
    for name, r in (("single-task", single), ("hard sharing", hard), ("AdaShare", ada)):
        rows[name] = {"metrics": r["metrics"], "params": r["params"], "macs": r["macs"],
                      "delta_mtl": delta_mtl(r["metrics"], single["metrics"], specs)}  # fmt: skip
    return SharingComparison(specs, rows, ada["policy"], ada["select_probabilities"])


class _TaskView(Dataset):
    """The items of a dataset with only some tasks' targets (plus the label mask if there is one)."""

    def __init__(self, data: Dataset, tasks: tuple[str, ...]) -> None:
        self.data, self.tasks = data, tasks

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.data[i]
        return x, {t: y[t] for t in self.tasks}


@dataclasses.dataclass
class AllocationComparison:
    """Per allocation strategy: labels per task, what they cost, each task's metric after training on them, and the
    multi-task score (gain in percent against a network trained with every label of the pool)."""

    specs: dict[str, TaskSpec]
    costs: dict[str, float]
    budget: float
    reference: dict[str, float]
    rows: dict[str, dict[str, Any]]
    pilot: dict[str, Any]

    def best_fixed(self) -> str:
        """The fixed strategy with the highest score."""
        return max((s for s in self.rows if s in ALLOCATIONS), key=lambda s: self.rows[s]["score"])

    def to_table(self) -> str:
        """Strategies by tasks: labels bought, metric, and the score."""
        names = list(self.specs)
        headers = ["strategy", *(f"{t} labels / {self.specs[t].metric_name}" for t in names), "spent", "score"]
        rows = [[s, *(f"{r['counts'][t]} / {r['metrics'][t]:.4g}" for t in names), f"{r['spent']:.0f}",
                 f"{r['score']:+.2f}%"] for s, r in self.rows.items()]  # fmt: skip
        return format_table(rows, headers, align="l" + "r" * (len(headers) - 1))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return {"costs": self.costs, "budget": self.budget, "reference": self.reference, "rows": self.rows,
                "pilot": self.pilot, "best_fixed": self.best_fixed()}  # fmt: skip


def compare_allocations(
    pool: Dataset,
    val: Dataset,
    test: Dataset,
    specs: Mapping[str, TaskSpec],
    costs: Mapping[str, float],
    budget: float,
    config: MultiTaskConfig | None = None,
    *,
    steps: int = 600,
    pilot_share: float = 0.25,
    reference: Mapping[str, float] | None = None,
    widths: Sequence[int] = (16, 16, 32, 32, 32, 32),
    out_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> AllocationComparison:
    """Trains a hard-sharing network on the labels each strategy buys from ``pool`` with ``budget`` (the three
    fixed strategies and the task-adaptive one) for ``steps`` optimizer steps each over the whole pool (the same
    batches for every allocation; each task's loss over its labelled images), and scores each on ``test``
    against a network trained with every label of the pool (``reference``: its metrics, trained here when not
    given). The adaptive allocator's pilot starts from the uniform-cost allocation of ``pilot_share`` of the budget
    and doubles each task in turn (so it buys twice that share, and the adaptive allocation keeps those labels); the
    pilot runs are scored on ``val``, never on ``test``. With ``out_dir`` each finished training's figures are kept.

    Example:
        >>> from effdl.data import load_scenes
        >>> from effdl.multitask.tasks import scene_task_specs
        >>> s = load_scenes(train=40, val=4, test=4, size=16)
        >>> specs = {k: v for k, v in scene_task_specs().items() if k in ("segment", "count")}
        >>> c = compare_allocations(*(p.dataset(tuple(specs)) for p in (s.train, s.val, s.test)), specs,
        ...                         {"segment": 4.0, "count": 1.0}, 80, MultiTaskConfig(batch_size=8), steps=2,
        ...                         widths=(8,))
        >>> list(c.rows), c.pilot["base"]
        (['uniform-count', 'uniform-cost', 'cost-proportional', 'adaptive'], {'segment': 2, 'count': 10})
    """
    config = config or MultiTaskConfig()
    specs, costs = dict(specs), {t: float(costs[t]) for t in specs}
    check_range("pilot_share", pilot_share, 0, 0.5, low_open=True,
                hint="the pilot buys twice its share of the budget; use 0.25")
    n = len(pool)  # type: ignore[arg-type]
    out = Path(out_dir) if out_dir is not None else None
    tasks = tuple(specs)

    def train_on(counts: Mapping[str, int], key: str, data_for_score: Dataset) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            data = LabelledSubsets(pool, tasks, counts, seed=config.seed, keep_unlabelled=True)
            epochs = max(1, math.ceil(steps * config.batch_size / len(data)))
            torch.manual_seed(config.seed)
            net = MultiTaskNet(specs, widths=widths)
            train_multitask(net, data, config, epochs=epochs, progress=progress)
            return {"counts": dict(counts), "metrics": evaluate_multitask(net, data_for_score)}

        return _cached(_sub(out, f"{key}.json"), run)

    def name(prefix: str, counts: Mapping[str, int]) -> str:
        return prefix + "-" + "-".join(str(counts[t]) for t in tasks)

    ref = dict(reference) if reference is not None else train_on({t: n for t in tasks}, "reference", test)["metrics"]
    base = {t: max(1, k) for t, k in fixed_allocation("uniform-cost", costs, pilot_share * budget, n).items()}
    estimate = pilot_gains(lambda counts: train_on(counts, name("pilot-val", counts), val)["metrics"], specs, base)
    allocations = {s: fixed_allocation(s, costs, budget, n) for s in ALLOCATIONS}
    allocations["adaptive"] = adaptive_allocation(estimate, costs, budget, n)
    rows = {}
    for strategy, counts in allocations.items():
        r = train_on(counts, name("alloc", counts), test)
        rows[strategy] = {"counts": counts, "spent": sum(counts[t] * costs[t] for t in tasks), "metrics": r["metrics"],
                          "score": delta_mtl(r["metrics"], ref, specs)}  # fmt: skip
        log.info("%s: %s -> score %+.2f%%", strategy, counts, rows[strategy]["score"])
    return AllocationComparison(specs, costs, float(budget), ref, rows, estimate.to_dict())
