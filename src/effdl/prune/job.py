"""``prune_model()``: the whole job behind ``effdl prune`` — measure, (sensitivity), prune, fine-tune, measure,
save, report. It sits on top of the trainer, like ``train_model``."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from effdl.core.errors import ConfigError
from effdl.core.report import Report
from effdl.core.table import format_table
from effdl.data.base import DatasetSplits
from effdl.data.loaders import make_loader, split_validation
from effdl.measure.evaluation import evaluate
from effdl.models.base import model_spec
from effdl.models.checkpoint import save_model
from effdl.prune.api import prune_
from effdl.prune.sensitivity import SensitivityResult, sensitivity_analysis
from effdl.prune.storage import save_sparse
from effdl.prune.structured import StructuredPruning
from effdl.prune.unstructured import KeepSparsity, MagnitudePruning
from effdl.train.callbacks import CSVLogger
from effdl.train.config import TrainConfig
from effdl.train.loop import Trainer
from effdl.train.run import summarize

__all__ = ["PruneOutcome", "prune_model"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PruneOutcome:
    """The pruned (and fine-tuned) model, the report, and the sensitivity result if one was computed."""

    model: nn.Module
    report: Report
    sensitivity: SensitivityResult | None = None


def prune_model(
    model: nn.Module,
    data: DatasetSplits,
    config: StructuredPruning | MagnitudePruning,
    *,
    finetune: TrainConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    sensitivity_tolerance: float | None = None,
    profile_batch_size: int = 1,
    threads: int | None = None,
    repeats: int = 50,
    progress: bool = True,
) -> PruneOutcome:
    """Prunes ``model`` with ``config``, optionally fine-tunes it, and reports before/after (accuracy, params, MACs,
    size, latency).

    Args:
        model: a trained model (changed in place).
        data: its dataset.
        config: the pruning method.
        finetune: training settings of the fine-tuning run (None: no fine-tuning).
        out_dir: writes ``model.safetensors``, ``report.json``, ``metrics.csv`` and (with a tolerance)
            ``sensitivity.png`` there; fine-tuning checkpoints make the run resumable.
        resume: continue an interrupted fine-tuning run in ``out_dir``.
        sensitivity_tolerance: first run a sensitivity analysis on a validation split (10% of train) and replace
            the config's ratios by the per-layer ratios that lose at most this much accuracy (e.g. 0.01).
        profile_batch_size, threads, repeats: latency measurement.
        progress: progress bar for the sensitivity analysis.

    Returns:
        A :class:`PruneOutcome`.
    """
    out = Path(out_dir) if out_dir is not None else None
    x = data.example_inputs(2)
    before, _ = summarize(model, data, batch_size=profile_batch_size, threads=threads, repeats=repeats)
    sens = None
    if sensitivity_tolerance is not None:
        if not isinstance(config, StructuredPruning):
            raise ConfigError(
                "sensitivity analysis chooses per-layer ratios of structured pruning; use a structured method"
            )
        _, val = split_validation(data.train, 0.1, seed=0)
        sens = sensitivity_analysis(model, val, x, criterion=config.criterion, ignore=config.ignore, progress=progress)
        config = sens.to_config(
            sensitivity_tolerance, criterion=config.criterion, round_to=config.round_to, ignore=config.ignore
        )
        if out is not None:
            sens.plot(out / "sensitivity.png")
    loader = make_loader(data.train, 64, shuffle=True, seed=0)
    report = prune_(model, config, example_inputs=x, data=loader)
    pruned_acc = evaluate(model, data.test)["accuracy"]
    history: list[dict[str, Any]] = []
    if finetune is not None and finetune.epochs > 0:
        callbacks = [KeepSparsity()] if isinstance(config, MagnitudePruning) else []
        if out is not None:
            callbacks.append(CSVLogger(out / "metrics.csv"))
        trainer = Trainer(model, finetune, callbacks=callbacks, out_dir=out)
        history = trainer.fit(data.train, data.test, resume=resume).history
    after, prof = summarize(model, data, batch_size=profile_batch_size, threads=threads, repeats=repeats)
    spec = model_spec(model) or {}
    result = Report(
        command="prune",
        model=spec.get("name", type(model).__name__),
        dataset=data.name,
        before=before,
        after=after,
        config={"pruning": config.to_dict(), "finetune": finetune.to_dict() if finetune else None},
        details={
            **report.details,
            "accuracy_before_finetune": pruned_acc,
            "history": history,
            "profile": prof.to_dict(),
            **({"sensitivity": sens.to_dict()} if sens else {}),
        },
    )
    if out is not None:
        result.artifacts["model"] = str(save_model(model, out / "model.safetensors", meta={"dataset": data.name}))
        if isinstance(config, MagnitudePruning):
            result.artifacts["sparse_model"] = str(save_sparse(model, out / "model.sparse.safetensors"))
        if sens is not None:
            result.artifacts["sensitivity_plot"] = str(out / "sensitivity.png")
        result.write(out)
    return PruneOutcome(model, result, sens)


def groups_table(report: Report) -> str:
    """Channels per group before and after (structured pruning reports)."""
    rows = [
        [g["group"], g["kind"], g["before"], g["after"]]
        for g in report.details.get("groups", [])
        if g["before"] != g["after"]
    ]
    return format_table(rows, ["group", "kind", "before", "after"], align="llrr") if rows else "(no group changed)"
