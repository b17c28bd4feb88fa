"""``quantize_model()``: the whole job behind ``effdl quantize`` — measure, (mixed precision), quantize, calibrate
or train, measure, save, report. It sits on top of the trainer, like ``train_model``."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from effdl.core.config import check_choice
from effdl.core.report import ModelSummary, Report
from effdl.data.base import DatasetSplits
from effdl.data.loaders import make_loader
from effdl.measure.evaluation import evaluate
from effdl.measure.latency import measure_latency
from effdl.models.base import model_spec
from effdl.models.checkpoint import save_model
from effdl.quant.api import quantize_
from effdl.quant.config import Int8Config, QuantConfig
from effdl.quant.int8 import Int8Model, convert_int8
from effdl.quant.mixed import MixedPrecisionResult, mixed_precision
from effdl.train.callbacks import CSVLogger
from effdl.train.config import TrainConfig
from effdl.train.loop import Trainer
from effdl.train.run import summarize

__all__ = ["METHODS", "QuantizeOutcome", "quantize_model", "summarize_quantized"]

log = logging.getLogger(__name__)

#: ptq-int8: real int8 kernels; ptq: simulated at any bit width (calibration only); qat: simulated, then trained
METHODS = ("ptq-int8", "ptq", "qat")


@dataclasses.dataclass
class QuantizeOutcome:
    """The quantized model (an :class:`Int8Model` for ``ptq-int8``), the report, and the mixed-precision result."""

    model: nn.Module
    report: Report
    mixed: MixedPrecisionResult | None = None


def quantize_model(
    model: nn.Module,
    data: DatasetSplits,
    *,
    method: str = "ptq-int8",
    quant: QuantConfig | None = None,
    int8: Int8Config | None = None,
    train: TrainConfig | None = None,
    mixed_budget: float | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    profile_batch_size: int = 1,
    threads: int | None = None,
    repeats: int = 50,
) -> QuantizeOutcome:
    """Quantizes a trained ``model`` and reports accuracy, size and latency before and after.

    Args:
        model: the float model (changed in place for ``ptq``/``qat``; left as it is for ``ptq-int8``).
        data: its dataset (calibration batches come from the training split).
        method: ``ptq-int8`` (real int8 kernels), ``ptq`` (simulated, any bits) or ``qat`` (simulated, trained).
        quant: bits and options for ``ptq``/``qat``.
        int8: runtime and calibration options for ``ptq-int8``.
        train: the QAT training run (``qat`` only).
        mixed_budget: allocate per-layer weight bits first under this average-bits size budget (``ptq``/``qat``).
        out_dir: writes the model, ``report.json`` (and ``metrics.csv``, ``mixed_precision.png``) there.
        resume: continue an interrupted QAT run in ``out_dir``.
        profile_batch_size, threads, repeats: latency measurement.
    """
    check_choice("method", method, METHODS)
    out = Path(out_dir) if out_dir is not None else None
    x = data.example_inputs(8)
    calib = make_loader(data.train, 64, shuffle=True, seed=0)
    before, _ = summarize(model, data, batch_size=profile_batch_size, threads=threads, repeats=repeats)
    details: dict[str, Any] = {"method": method}
    mixed = None
    if method == "ptq-int8":
        int8 = int8 or Int8Config()
        qmodel: nn.Module = convert_int8(
            model, int8, example_inputs=x, data=calib, batch_size=profile_batch_size, threads=threads
        )
        size = qmodel.size_bytes()
        details["runtime"] = qmodel.runtime
        details["runtime_selection_ms"] = qmodel.selection
        config = {"int8": int8.to_dict()}
    else:
        quant = quant or QuantConfig()
        if mixed_budget is not None:
            mixed = mixed_precision(model, data.test, example_inputs=x, budget=mixed_budget, ignore=quant.ignore)
            quant = mixed.to_config(bits_a=quant.bits_a, observer=quant.observer, lsq=quant.lsq, ignore=quant.ignore)
            details["mixed_precision"] = mixed.to_dict()
            if out is not None:
                mixed.plot(out / "mixed_precision.png")
        report = quantize_(model, quant, example_inputs=x, data=calib)
        details.update(report.details)
        details["accuracy_after_calibration"] = evaluate(model, data.test)["accuracy"]
        if method == "qat" and train is not None and train.epochs > 0:
            callbacks = [CSVLogger(out / "metrics.csv")] if out is not None else []
            trainer = Trainer(model, train, callbacks=callbacks, out_dir=out)
            details["history"] = trainer.fit(data.train, data.test, resume=resume).history
        qmodel = model
        size = report.after.size_bytes
        config = {"quant": quant.to_dict(), "train": train.to_dict() if train else None}
    after = summarize_quantized(qmodel, data, before, size, profile_batch_size, threads, repeats)
    spec = model_spec(model) or {}
    result = Report(
        command="quantize",
        model=spec.get("name", type(model).__name__),
        dataset=data.name,
        before=before,
        after=after,
        config={"method": method, **config},
        details=details,
    )
    if out is not None:
        if isinstance(qmodel, Int8Model):
            result.artifacts["model"] = str(qmodel.save(out / "model.int8"))
        else:
            meta = {"dataset": data.name}
            result.artifacts["model"] = str(save_model(qmodel, out / "model.safetensors", meta=meta))
        if mixed is not None:
            result.artifacts["mixed_precision_plot"] = str(out / "mixed_precision.png")
        result.write(out)
    return QuantizeOutcome(qmodel, result, mixed)


def summarize_quantized(
    model: nn.Module,
    data: DatasetSplits,
    before: ModelSummary,
    size: int,
    batch_size: int,
    threads: int | None,
    repeats: int,
) -> ModelSummary:
    """Accuracy, latency and size of the quantized model; MACs and parameters are those of the float model (a
    quantized model does the same multiply-accumulates, in fewer bits)."""
    metrics = evaluate(model, data.test)
    lat = measure_latency(model, data.example_inputs(batch_size), threads=threads, repeats=repeats)
    return ModelSummary(
        params=before.params,
        macs=before.macs,
        size_bytes=size,
        accuracy=metrics["accuracy"],
        loss=metrics["loss"],
        latency_ms=lat.median_ms,
        latency_iqr_ms=lat.iqr_ms,
        batch_size=lat.batch_size,
        threads=lat.threads,
    )
