"""``compress``: replays a recipe on a trained model, step by step, saving and profiling after each step, so that
an interrupted run continues from the last finished step; then deploys and reports."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from effdl.compress.deploy import Deployment, deploy
from effdl.compress.recipe import PruneStep, Recipe
from effdl.compress.report import write_reports
from effdl.compress.steps import RUNNERS, StepContext
from effdl.core.errors import CheckpointError, ConfigError
from effdl.core.io import atomic_write_json
from effdl.core.report import ModelSummary, Report
from effdl.data.base import DatasetSplits
from effdl.models.base import model_spec
from effdl.models.checkpoint import load_model, save_model
from effdl.prune.unstructured import MagnitudePruning
from effdl.quant.int8 import Int8Model, load_int8
from effdl.quant.job import summarize_quantized
from effdl.train.run import summarize

__all__ = ["CompressOutcome", "Stage", "compress_model"]

log = logging.getLogger(__name__)

_PROGRESS = "progress.json"


@dataclasses.dataclass
class Stage:
    """The model after one step (or the baseline): its summary and where it is saved."""

    name: str
    summary: ModelSummary
    path: str
    runtime: str = "pytorch"
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for progress.json and report.json)."""
        return {"name": self.name, "summary": self.summary.to_dict(), "path": self.path, "runtime": self.runtime,
                "details": self.details}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stage:
        """Inverse of :meth:`to_dict`."""
        return cls(d["name"], ModelSummary.from_dict(d["summary"]), d["path"], d.get("runtime", "pytorch"),
                   d.get("details", {}))  # fmt: skip


@dataclasses.dataclass
class CompressOutcome:
    """The compressed model (an :class:`~effdl.quant.Int8Model` after a quantize step), the report, every stage
    and the deployment measurements."""

    model: nn.Module
    report: Report
    stages: list[Stage]
    deployment: Deployment | None


def compress_model(
    model: nn.Module,
    data: DatasetSplits,
    recipe: Recipe,
    *,
    out_dir: str | os.PathLike,
    restart: bool = False,
    batch_size: int = 32,
    threads: int | None = None,
    repeats: int = 30,
    progress: bool = True,
) -> CompressOutcome:
    """Compresses a trained ``model`` with ``recipe`` and reports every stage.

    After each step the model is saved under ``OUT/steps/NN-kind/`` with its profile (accuracy, parameters, MACs,
    size, latency at ``batch_size``) and ``OUT/progress.json`` records it: running the same call again continues
    after the last finished step (and a fine-tuning step resumes from its own checkpoints). At the end the final
    model is exported to ONNX and timed in PyTorch and onnxruntime, every stage is timed again side by side, and
    ``report.json``, ``report.md`` and ``pareto.png`` are written to ``OUT``.

    Args:
        model: the trained model (the teacher of distillation steps; not changed).
        data: its dataset.
        recipe: the steps.
        out_dir: output folder.
        restart: discard an earlier run in ``out_dir`` instead of continuing it.
        batch_size: the serving batch size: latency is measured and int8/onnxruntime chosen for it.
        threads: torch threads for timing (default: torch's).
        repeats: timed calls per latency measurement.
        progress: progress bars.

    Raises:
        ConfigError: ``out_dir`` holds a run of another recipe or model (continue it with the same recipe, or
            pass ``restart=True`` / ``--restart``).
    """
    out = Path(out_dir)
    if restart and out.exists():
        for name in ("steps", _PROGRESS, "final"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    recipe.save(out / "recipe.yaml")
    teacher = copy.deepcopy(model).eval()
    spec = model_spec(model) or {}
    identity = {"spec": _jsonable(spec), "weights": _weights_hash(model)}
    state = _load_progress(out, recipe, identity)
    stages = [Stage.from_dict(s) for s in state["stages"]]
    current: nn.Module
    if not stages:
        summary, _ = summarize(model, data, batch_size=batch_size, threads=threads, repeats=repeats)
        base_path = save_model(model, out / "steps" / "00-baseline" / "model.safetensors", meta={"dataset": data.name})
        stages.append(Stage("baseline", summary, str(base_path)))
        _save_progress(out, recipe, identity, stages)
        current = copy.deepcopy(model)
    else:
        log.info("continuing %s after step %d of %d", out, len(stages) - 1, len(recipe.steps))
        current = _load_stage(stages[-1])
    for index in range(len(stages) - 1, len(recipe.steps)):
        step = recipe.steps[index]
        step_dir = out / "steps" / f"{index + 1:02d}-{step.kind}"
        step_dir.mkdir(parents=True, exist_ok=True)
        sparse = any(isinstance(s, PruneStep) and isinstance(s.config, MagnitudePruning) for s in recipe.steps[:index])
        ctx = StepContext(data=data, teacher=teacher, out_dir=step_dir, batch_size=batch_size, threads=threads,
                          sparse=sparse, progress=progress)  # fmt: skip
        log.info("step %d/%d: %s", index + 1, len(recipe.steps), step.describe())
        current, details = RUNNERS[type(step)](current, step, ctx)
        current.eval()  # training steps leave the model in training mode
        summary = _summary(current, data, stages[-1].summary, batch_size, threads, repeats)
        if isinstance(current, Int8Model):
            path = current.save(step_dir / "model")
            runtime = f"{current.runtime} int8"
        else:
            path = save_model(current, step_dir / "model.safetensors", meta={"dataset": data.name})
            runtime = "pytorch"
        stages.append(Stage(f"{index + 1}. {step.describe()}", summary, str(path), runtime, _jsonable(details)))
        _save_progress(out, recipe, identity, stages)
        log.info(
            "after %s: accuracy %.2f%%, %d bytes", step.describe(), 100 * (summary.accuracy or 0), summary.size_bytes
        )
    deployment = deploy(current, stages, data, out / "final", batch_size=batch_size, threads=threads)
    report = Report(
        command="compress_model",
        model=spec.get("name", type(model).__name__),
        dataset=data.name,
        before=stages[0].summary,
        after=stages[-1].summary,
        config={"recipe": recipe.to_dict(), "batch_size": batch_size},
        details={"stages": [s.to_dict() for s in stages], "deployment": deployment.to_dict()},
    )
    write_reports(report, stages, deployment, out)
    return CompressOutcome(current, report, stages, deployment)


def _summary(
    model: nn.Module, data: DatasetSplits, previous: ModelSummary, batch_size: int, threads: int | None, repeats: int
) -> ModelSummary:
    if not isinstance(model, Int8Model):
        summary, _ = summarize(model, data, batch_size=batch_size, threads=threads, repeats=repeats)
        return summary
    # an int8 model does the MACs of the float model it was made from (the previous stage), in int8
    return summarize_quantized(model, data, previous, model.size_bytes(), batch_size, threads, repeats)


def _load_stage(stage: Stage) -> nn.Module:
    path = Path(stage.path)
    if not path.exists():
        raise CheckpointError(f"the run's model after {stage.name!r} is missing ({path}); rerun with --restart")
    if stage.runtime.endswith("int8"):
        return load_int8(path)
    return load_model(path)


def _weights_hash(model: nn.Module) -> str:
    """A hash of the input model's weights: a rerun continues only from the same starting model."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _load_progress(out: Path, recipe: Recipe, identity: dict[str, Any]) -> dict[str, Any]:
    path = out / _PROGRESS
    if not path.exists():
        return {"stages": []}
    state = json.loads(path.read_text())
    if state.get("recipe") != recipe.fingerprint() or state.get("model") != identity:
        raise ConfigError(
            f"{out} holds a run of another recipe or model; continue it with the same recipe and checkpoint, use "
            "another output folder, or start over with restart=True (CLI: --restart)"
        )
    return state


def _save_progress(out: Path, recipe: Recipe, identity: dict[str, Any], stages: list[Stage]) -> None:
    atomic_write_json(out / _PROGRESS, {"recipe": recipe.fingerprint(), "model": identity,
                                         "stages": [s.to_dict() for s in stages]})  # fmt: skip


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
