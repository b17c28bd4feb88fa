"""Ground truth for NAS: architectures of a search space trained with one fixed recipe, one unit of work each, in
this process, a local pool or on Ray (:mod:`effdl.scale`); finished architectures are kept in a file, so that an
interrupted run continues without training them again."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from effdl.core.callback import Callback
from effdl.core.config import Config, check_range
from effdl.core.errors import CheckpointError, ConfigError
from effdl.core.io import json_safe
from effdl.data import get_dataset
from effdl.nas.space import get_space
from effdl.scale import ExecutorConfig, UnitFailure, run_trials
from effdl.train import TrainConfig, Trainer, evaluate

__all__ = ["GROUND_TRUTH_RECIPE", "GroundTruthConfig", "TrainedArchitectures", "sample_codes", "train_architectures"]

log = logging.getLogger(__name__)

#: the recipe of the committed ground truth (``nas/data/mnist1d_cnn_v1.json``)
GROUND_TRUTH_RECIPE = {"epochs": 10, "batch_size": 128, "optimizer": "adamw", "lr": 1e-2, "weight_decay": 5e-2,
                       "schedule": "cosine", "seed": 0}  # fmt: skip
PARTIAL = "architectures.partial.jsonl"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GroundTruthConfig(Config):
    """How each architecture is trained.

    Attributes:
        space: the search space (see ``SPACES``).
        recipe: :class:`~effdl.train.TrainConfig` fields; weights are seeded with ``recipe["seed"]``.
        scheduler: ``fifo`` (train every architecture to the end: a ground truth) or ``asha`` (Ray Tune's
            asynchronous successive halving stops architectures whose training accuracy lags after each epoch: a
            search that spends its epochs on the promising ones; Ray only).

    Example:
        >>> GroundTruthConfig(recipe={"epochs": 1}).train_config().epochs
        1
    """

    space: str = "mnist1d_cnn"
    recipe: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(GROUND_TRUTH_RECIPE))
    scheduler: str = "fifo"

    def validate(self) -> None:
        """Checks every field."""
        get_space(self.space)
        self.train_config()
        if self.scheduler not in ("fifo", "asha"):
            raise ConfigError(f"scheduler must be fifo or asha, got {self.scheduler!r}; use scheduler='fifo'")

    def train_config(self) -> TrainConfig:
        """The training settings (no progress bar, evaluated once at the end)."""
        recipe = {**GROUND_TRUTH_RECIPE, **self.recipe}
        try:
            return TrainConfig(**{**recipe, "progress": False, "eval_every": recipe["epochs"]})
        except TypeError as exc:
            raise ConfigError(
                f"recipe holds a field TrainConfig does not know ({exc}); see effdl.train.TrainConfig"
            ) from None


@dataclasses.dataclass
class TrainedArchitectures:
    """What :func:`train_architectures` returns: one record per trained architecture, in the order given (``arch``,
    ``test_accuracy``, ``train_accuracy``, ``epochs``, ``train_seconds``; ``stopped_early`` under ``asha``), and
    the architectures that failed, with their errors."""

    records: list[dict[str, Any]]
    failures: list[UnitFailure]


def sample_codes(space: str, count: int, seed: int = 0) -> list[str]:
    """``count`` distinct architectures drawn from ``space`` (the same for a seed).

    Example:
        >>> sample_codes("mnist1d_cnn", 2) == sample_codes("mnist1d_cnn", 2)
        True
    """
    check_range("count", count, 1, hint="use count=300")
    sp = get_space(space)
    g = torch.Generator().manual_seed(seed)
    seen: dict[str, None] = {}
    for _ in range(100 * count):
        seen.setdefault(sp.sample(g).encode())
        if len(seen) == count:
            return list(seen)
    raise ConfigError(f"the space {space!r} gave only {len(seen)} distinct architectures; use count<={len(seen)}")


class _EpochReport(Callback):
    def __init__(self, report) -> None:
        self.report = report

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        self.report({"train_accuracy": float(metrics["train_accuracy"]), "epoch": epoch})


def _train_architecture(shared: tuple, params: dict, report) -> dict[str, Any]:
    config, data = shared
    space = get_space(config.space)
    train = config.train_config()
    torch.manual_seed(train.seed)
    model = space.build(params["arch"])
    t0 = time.perf_counter()
    result = Trainer(model, train, callbacks=[_EpochReport(report)]).fit(data.train)
    return {
        "arch": params["arch"],
        "test_accuracy": evaluate(model, data.test)["accuracy"],
        "train_accuracy": evaluate(model, data.train)["accuracy"],
        "epochs": len(result.history),
        "train_seconds": time.perf_counter() - t0,
    }


def train_architectures(
    codes: list[str],
    config: GroundTruthConfig | None = None,
    *,
    executor: ExecutorConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    data: Any = None,
    progress: bool = True,
) -> TrainedArchitectures:
    """Trains every architecture of ``codes`` with ``config.recipe`` and measures its accuracies.

    Args:
        codes: architecture codes of ``config.space`` (e.g. from :func:`sample_codes`).
        executor: where the units run (default: one after another in this process).
        out_dir: finished architectures are appended to ``OUT/architectures.partial.jsonl`` as they finish; a run
            given the same folder trains only the missing ones (None: nothing is kept).
        data: the space's dataset (default: loaded from its registry name).
        progress: a progress bar.

    Example:
        >>> out = train_architectures(["c8-8_k3-3_s1-2_r0"], GroundTruthConfig(recipe={"epochs": 1}), progress=False)
        >>> out.records[0]["arch"], 0.0 <= out.records[0]["test_accuracy"] <= 1.0, out.failures
        ('c8-8_k3-3_s1-2_r0', True, [])
    """
    config = config or GroundTruthConfig()
    executor = executor or ExecutorConfig()
    if len(set(codes)) != len(codes):
        raise ConfigError("codes holds an architecture twice; pass each architecture once")
    space = get_space(config.space)
    for code in codes:
        space.build(code)  # a bad code fails here, before any training
    done = _load_partial(Path(out_dir) / PARTIAL, config) if out_dir is not None else {}
    todo = [c for c in codes if c not in done]
    log.info("%d architecture(s) to train, %d finished before", len(todo), len(codes) - len(todo))
    if data is None:
        data = get_dataset(space.dataset)
    path = None if out_dir is None else Path(out_dir) / PARTIAL
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(json.dumps({"config": config.to_dict()}) + "\n")

    def keep(key: str, record: dict) -> None:
        record = {"arch": key, **record}  # a record of an architecture stopped early holds its last metrics only
        done[key] = record
        if path is not None:
            with path.open("a") as fh:  # one line per architecture: a crash loses at most the unit in flight
                fh.write(json.dumps(json_safe(record)) + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    outcome = run_trials(
        _train_architecture,
        {code: {"arch": code} for code in todo},
        executor,
        shared=(config, data),
        scheduler=config.scheduler,
        metric="train_accuracy",
        max_steps=config.train_config().epochs,
        on_result=keep,
        progress="architectures" if progress else None,
    )
    return TrainedArchitectures(records=[done[c] for c in codes if c in done], failures=outcome.failures)


def _load_partial(path: Path, config: GroundTruthConfig) -> dict[str, dict]:
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    try:
        head = json.loads(lines[0])
        records = [json.loads(line) for line in lines[1:]]
    except (json.JSONDecodeError, IndexError) as exc:
        if lines and all(_parses(x) for x in lines[:-1]):  # a line cut short by a crash: drop it
            return _load_partial_lines(path, lines[:-1], config)
        raise CheckpointError(f"{path} is unreadable ({exc}); delete it to train every architecture again") from exc
    if head.get("config") != config.to_dict():
        raise ConfigError(
            f"{path} holds architectures trained with another configuration ({head.get('config')}); use another "
            "out_dir, or delete the file to train again"
        )
    return {r["arch"]: r for r in records}


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def _load_partial_lines(path: Path, lines: list[str], config: GroundTruthConfig) -> dict[str, dict]:
    path.write_text("\n".join(lines) + "\n")
    return _load_partial(path, config)
