"""``train_model()``: the whole job behind ``effdl train`` — build, train, evaluate, profile, save, report."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from effdl.core.io import note_written
from effdl.core.report import Report
from effdl.core.rundir import claim_run_dir, run_identity
from effdl.core.seed import seed_everything
from effdl.data.base import DatasetSplits, get_dataset
from effdl.measure.summary import MeasureConfig, summarize
from effdl.models.base import MODELS, create_model, model_spec
from effdl.models.checkpoint import save_model
from effdl.train.callbacks import Callback, CSVLogger, TensorBoardLogger
from effdl.train.config import TrainConfig
from effdl.train.loop import Trainer

__all__ = ["TrainOutcome", "default_train_config", "train_model"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainOutcome:
    """The trained model, its report and the per-epoch history."""

    model: nn.Module
    report: Report
    history: list[dict[str, float]]


def default_train_config(model: str, **overrides: Any) -> TrainConfig:
    """The model's recommended training settings (from its registry entry) with ``overrides`` applied.

    Example:
        >>> default_train_config("cnn1d").lr
        0.01
        >>> default_train_config("cnn1d", epochs=2).epochs
        2
    """
    defaults = MODELS.entry(model).meta["train_defaults"] if model in MODELS else {}
    return TrainConfig.from_dict({**defaults, **{k: v for k, v in overrides.items() if v is not None}})


def train_model(
    model: str | nn.Module,
    data: str | DatasetSplits,
    config: TrainConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    callbacks: list[Callback] | None = None,
    model_options: dict[str, Any] | None = None,
    data_options: dict[str, Any] | None = None,
    profile_batch_size: int = 1,
    threads: int | None = None,
    tensorboard: bool = False,
) -> TrainOutcome:
    """Trains a model on a dataset and reports on the result.

    With ``out_dir``, writes ``model.safetensors`` (+ ``.json``), ``metrics.csv``, ``report.json`` and a resumable
    ``checkpoints/last.safetensors``; ``resume=True`` continues an interrupted run from it.

    Args:
        model: a registered model name (built for the dataset's input shape and classes) or a module.
        data: a registered dataset name or loaded :class:`~effdl.data.DatasetSplits`.
        config: training settings; default: the model's recommended ones.
        out_dir: output folder (None: nothing written).
        resume: continue from the checkpoint in ``out_dir``.
        callbacks: extra training callbacks.
        model_options: architecture options for :func:`~effdl.models.create_model`.
        data_options: options for :func:`~effdl.data.get_dataset` (e.g. ``root``).
        profile_batch_size: batch size of the final latency measurement.
        threads: torch threads for the latency measurement.
        tensorboard: also log to TensorBoard (needs the tensorboard package).

    Example:
        >>> cfg = TrainConfig(epochs=1, progress=False)
        >>> outcome = train_model("test_mlp", "mnist1d", cfg)
        >>> outcome.report.summary.params
        826
    """
    splits = data if isinstance(data, DatasetSplits) else get_dataset(data, **(data_options or {}))
    name = model if isinstance(model, str) else (model_spec(model) or {}).get("name", type(model).__name__)
    config = config or (default_train_config(model) if isinstance(model, str) else TrainConfig())
    seed_everything(config.seed)
    net = (
        create_model(model, input_shape=splits.input_shape, num_classes=splits.num_classes, **(model_options or {}))
        if isinstance(model, str)
        else model
    )
    claim = contextlib.nullcontext()
    if out_dir is not None and int(os.environ.get("RANK", "0")) == 0:  # under torchrun rank 0 owns the folder
        identity = run_identity(
            model=model_spec(net) or name,
            model_options=model_options or {},
            config={k: v for k, v in config.to_dict().items() if k != "progress"},
            data=splits.fingerprint(),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
        )
        claim = claim_run_dir(out_dir, command="train", identity=identity, resume=resume)
    with claim:
        return _train(net, name, splits, config, out_dir, resume, callbacks, profile_batch_size, threads, tensorboard)


def _train(net, name, splits, config, out_dir, resume, callbacks, profile_batch_size, threads, tensorboard):
    cbs = list(callbacks or [])
    if out_dir is not None:
        out = Path(out_dir)
        cbs.append(CSVLogger(out / "metrics.csv"))
        if tensorboard:
            if not TensorBoardLogger.available():
                log.warning("tensorboard is not installed; skipping TensorBoard logging (pip install tensorboard)")
            else:
                cbs.append(TensorBoardLogger(out / "tensorboard"))
    trainer = Trainer(net, config, callbacks=cbs, out_dir=out_dir)
    result = trainer.fit(splits.train, splits.test, resume=resume)
    if out_dir is not None and tensorboard:  # TensorBoard writes its own files: they belong to the run too
        for file in Path(out_dir, "tensorboard").rglob("*"):
            if file.is_file():
                note_written(file)
    report = Report(
        command="train",
        model=name,
        dataset=splits.name,
        config=config.to_dict(),
        details={"history": result.history},
    )
    if not trainer.is_main:  # under torchrun only rank 0 measures and writes (timings would contend otherwise)
        return TrainOutcome(model=net, report=report, history=result.history)
    report.summary, prof = summarize(net, splits, MeasureConfig(batch_size=profile_batch_size, threads=threads))
    report.details["profile"] = prof.to_dict()
    if out_dir is not None:
        out = Path(out_dir)
        meta = {
            "dataset": splits.name,
            "metrics": {"accuracy": report.summary.accuracy, "loss": report.summary.loss},
            "train_config": config.to_dict(),
        }
        save_model(net, out / "model.safetensors", meta=meta)
        report.artifacts = {
            "checkpoint": "model.safetensors",
            "metrics": "metrics.csv",
            "resume_state": "checkpoints/last.safetensors",
        }
        report.write(out)
    return TrainOutcome(model=net, report=report, history=result.history)
