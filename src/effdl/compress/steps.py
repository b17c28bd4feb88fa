"""What each recipe step does to the model: one runner per step kind, each calling the family's public API."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from effdl.compress.recipe import FactorizeStep, FinetuneStep, PruneStep, QATStep, QuantizeStep, Step
from effdl.core.callback import Callback
from effdl.data.base import DatasetSplits
from effdl.data.loaders import make_loader
from effdl.distill.callback import Distillation
from effdl.distill.config import DistillConfig
from effdl.factorize.api import factorize_
from effdl.models.base import model_spec
from effdl.prune.api import prune_
from effdl.prune.unstructured import KeepSparsity, masks_from_zeros
from effdl.quant.api import quantize_
from effdl.quant.int8 import convert_int8
from effdl.train.callbacks import CSVLogger
from effdl.train.loop import Trainer
from effdl.train.run import default_train_config

__all__ = ["RUNNERS", "StepContext"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StepContext:
    """What a step runner gets besides the model.

    Attributes:
        data: the dataset (training split for fine-tuning and calibration, test split for reports).
        teacher: the uncompressed model, for distillation.
        out_dir: the step's folder (training checkpoints live there, so an interrupted step resumes).
        batch_size: the serving batch size (int8 runtime choice).
        threads: torch threads for timing.
        sparse: whether magnitude pruning ran earlier (fine-tuning then keeps the zeros).
        progress: progress bars.
    """

    data: DatasetSplits
    teacher: nn.Module
    out_dir: Path
    batch_size: int = 32
    threads: int | None = None
    sparse: bool = False
    progress: bool = True

    def example_inputs(self, n: int = 8):
        """``n`` test examples, to trace the model."""
        return self.data.example_inputs(n)

    def calibration(self):
        """Shuffled training batches of 64 (calibration and data-driven criteria)."""
        return make_loader(self.data.train, 64, shuffle=True, seed=0)


def _prune(model: nn.Module, step: PruneStep, ctx: StepContext) -> tuple[nn.Module, dict[str, Any]]:
    report = prune_(model, step.config, example_inputs=ctx.example_inputs(2), data=ctx.calibration())
    return model, {k: v for k, v in report.details.items() if k != "layers"}


def _train(model: nn.Module, train: dict, distill: DistillConfig | None, ctx: StepContext) -> dict[str, Any]:
    spec = model_spec(model) or {}
    cfg = default_train_config(spec.get("name", ""), progress=ctx.progress, **train)
    callbacks: list[Callback] = [CSVLogger(ctx.out_dir / "metrics.csv")]
    if ctx.sparse:
        callbacks.append(KeepSparsity(masks_from_zeros(model)))
    kd = None
    if distill is not None:
        kd = Distillation(ctx.teacher, distill)
        callbacks.append(kd)
    trainer = Trainer(model, cfg, callbacks=callbacks, out_dir=ctx.out_dir)
    resume = (ctx.out_dir / "checkpoints" / "last.safetensors").is_file()
    history = trainer.fit(ctx.data.train, ctx.data.test, resume=resume).history
    return {"train": cfg.to_dict(), "history": history, "resumed": resume}


def _finetune(model: nn.Module, step: FinetuneStep, ctx: StepContext) -> tuple[nn.Module, dict[str, Any]]:
    return model, _train(model, step.train, step.distill, ctx)


def _factorize(model: nn.Module, step: FactorizeStep, ctx: StepContext) -> tuple[nn.Module, dict[str, Any]]:
    report = factorize_(model, step.config, example_inputs=ctx.example_inputs(2))
    return model, report.details


def _qat(model: nn.Module, step: QATStep, ctx: StepContext) -> tuple[nn.Module, dict[str, Any]]:
    if not getattr(model, "effdl_quantization", None):  # a resumed step reloads a model that is already prepared
        quantize_(model, step.config, example_inputs=ctx.example_inputs(), data=ctx.calibration())
    return model, _train(model, step.train, step.distill, ctx)


def _quantize(model: nn.Module, step: QuantizeStep, ctx: StepContext) -> tuple[nn.Module, dict[str, Any]]:
    q = convert_int8(
        model,
        step.config,
        example_inputs=ctx.example_inputs(),
        data=ctx.calibration(),
        batch_size=ctx.batch_size,
        threads=ctx.threads,
    )
    return q, {"runtime": q.runtime, "runtime_selection_ms": q.selection}


#: step class -> runner(model, step, context) -> (model, details)
RUNNERS: dict[type, Callable[[nn.Module, Step, StepContext], tuple[nn.Module, dict[str, Any]]]] = {
    PruneStep: _prune,
    FinetuneStep: _finetune,
    FactorizeStep: _factorize,
    QATStep: _qat,
    QuantizeStep: _quantize,
}
