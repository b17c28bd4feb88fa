"""The one pipeline: replays a recipe (a list of configs) on a trained model, step by step, each step by the
transform registered for its config type, saving and profiling after each step so that an interrupted run
continues from the last finished step; then deploys and reports. ``effdl compress``, ``effdl prune`` and
``effdl quantize`` all run it."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from effdl.compress.deploy import Deployment, deploy
from effdl.compress.finetune import FinetuneConfig  # noqa: F401  (registers the fine-tuning transform)
from effdl.compress.report import write_reports
from effdl.core.config import Config
from effdl.core.deprecation import warn_once
from effdl.core.errors import CheckpointError, ConfigError
from effdl.core.io import atomic_write_json, note_written
from effdl.core.recipe import Recipe
from effdl.core.report import ModelSummary, Report
from effdl.core.rundir import claim_run_dir, run_identity
from effdl.core.transform import TransformContext, run_transform
from effdl.data.base import DatasetSplits
from effdl.data.loaders import make_loader
from effdl.measure.summary import MeasureConfig, summarize, summarize_quantized
from effdl.models.base import model_spec
from effdl.models.checkpoint import load_model, save_model
from effdl.prune.storage import save_sparse
from effdl.prune.unstructured import prunable_weights
from effdl.quant.int8 import Int8Model, load_int8

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
    recipe: Recipe | list[Config],
    *,
    out_dir: str | os.PathLike,
    restart: bool = False,
    measure: MeasureConfig | None = None,
    deploy_final: bool = True,
    progress: bool = True,
    command: str = "compress_model",
    details: dict[str, Any] | None = None,
    **legacy: Any,
) -> CompressOutcome:
    """Compresses a trained ``model`` with ``recipe`` (configs applied in order, each by the transform registered
    for its type) and reports every stage: the one pipeline behind ``effdl compress``, ``effdl prune`` and
    ``effdl quantize``.

    After each step the model is saved under ``OUT/steps/NN-name/`` with its profile (accuracy, parameters, MACs,
    size, latency at ``measure.batch_size``) and ``OUT/progress.json`` records it: running the same call again
    continues after the last finished step (and a fine-tuning step resumes from its own checkpoints). At the end
    (with ``deploy_final``) the final model is exported to ONNX and timed in PyTorch and onnxruntime, and every
    stage is timed again side by side; ``report.json``, ``report.md`` and ``pareto.png`` are written to ``OUT``.

    Args:
        model: the trained model (the teacher of distillation steps; not changed).
        data: its dataset.
        recipe: the steps: a :class:`~effdl.core.recipe.Recipe` or a list of configs.
        out_dir: output folder.
        restart: discard an earlier run in ``out_dir`` instead of continuing it.
        measure: latency measurement (default: batch 32, 30 repeats); ``batch_size`` is also the serving batch
            size an int8 runtime is chosen for.
        deploy_final: export, deploy and time the final model side by side with every stage.
        progress: progress bars.
        command: the command named in ``report.json``.
        details: more details for ``report.json`` (e.g. the analysis that chose the configs).
        **legacy: ``batch_size``, ``threads``, ``repeats`` of the previous release (deprecated: use ``measure``).

    Raises:
        ConfigError: ``out_dir`` holds a run of another recipe or model (continue it with the same recipe, or
            pass ``restart=True`` / ``--restart``).
    """
    recipe = recipe if isinstance(recipe, Recipe) else Recipe(list(recipe))
    measure = legacy_measure(measure, legacy, "compress_model")
    out = Path(out_dir)
    spec = model_spec(model) or {}
    identity = {"spec": _jsonable(spec), "weights": _weights_hash(model)}
    run = run_identity(recipe=recipe.to_dict()["steps"], model=identity, data=data.fingerprint(),
                       batch_size=measure.batch_size)  # fmt: skip
    with claim_run_dir(out, command=command, identity=run, resume=not restart, restart=restart):
        return _compress(model, data, recipe, out, identity, measure, deploy_final, progress, command, details)


def _compress(model, data, recipe, out, identity, measure, deploy_final, progress, command, details) -> CompressOutcome:
    state = _load_progress(out, recipe, identity)
    recipe.save(out / "recipe.yaml")
    teacher = copy.deepcopy(model).eval()
    spec = model_spec(model) or {}
    stages = [Stage.from_dict(s) for s in state["stages"]]
    current: nn.Module
    if not stages:
        summary, _ = summarize(model, data, measure)
        base_path = save_model(model, out / "steps" / "00-baseline" / "model.safetensors", meta={"dataset": data.name})
        stages.append(Stage("baseline", summary, str(base_path)))
        _save_progress(out, recipe, identity, stages)
        current = copy.deepcopy(model)
    else:
        log.info("continuing %s after step %d of %d", out, len(stages) - 1, len(recipe.steps))
        current = _load_stage(stages[-1])
    for index in range(len(stages) - 1, len(recipe.steps)):
        step = recipe.steps[index]
        step_dir = out / "steps" / f"{index + 1:02d}-{_slug(step)}"
        step_dir.mkdir(parents=True, exist_ok=True)
        context = TransformContext(
            example_inputs=data.example_inputs(8),
            data=make_loader(data.train, 64, shuffle=True, seed=0),  # fresh per step: a resumed run sees the same
            dataset=data,
            teacher=teacher,
            out_dir=step_dir,
            batch_size=measure.batch_size,
            threads=measure.threads,
            progress=progress,
            history=list(recipe.steps[:index]),
        )
        log.info("step %d/%d: %s", index + 1, len(recipe.steps), step.describe())
        applied = run_transform(current, step, context)
        current = applied.model.eval()  # training steps leave the model in training mode
        summary = _summary(current, data, stages[-1].summary, measure)
        if isinstance(current, Int8Model):
            path = current.save(step_dir / "model")
            runtime = f"{current.runtime} int8"
        else:
            path = save_model(current, step_dir / "model.safetensors", meta={"dataset": data.name})
            runtime = "pytorch"
        step_details = _jsonable({k: v for k, v in applied.report.details.items() if k != "layers"})
        stages.append(Stage(f"{index + 1}. {step.describe()}", summary, str(path), runtime, step_details))
        _save_progress(out, recipe, identity, stages)
        log.info(
            "after %s: accuracy %.2f%%, %d bytes", step.describe(), 100 * (summary.accuracy or 0), summary.size_bytes
        )
    deployment = None
    if deploy_final:
        deployment = deploy(current, stages, data, out / "final", batch_size=measure.batch_size,
                            threads=measure.threads)  # fmt: skip
    else:
        _copy_final(stages[-1], out / "final")
    final_files = {"final_model": str(out / "final" / Path(stages[-1].path).name)}
    if not isinstance(current, Int8Model) and _weight_sparsity(current) >= 0.5:  # zeros pay off in sparse storage
        final_files["sparse_model"] = str(save_sparse(current, out / "final" / "model.sparse.safetensors"))
    report = Report(
        command=command,
        model=spec.get("name", type(model).__name__),
        dataset=data.name,
        before=stages[0].summary,
        after=stages[-1].summary,
        config={"recipe": recipe.to_dict(), "measure": measure.to_dict()},
        details={"stages": [s.to_dict() for s in stages],
                 "deployment": deployment.to_dict() if deployment else None, **(details or {})},
    )  # fmt: skip
    report.artifacts.update(final_files)
    write_reports(report, stages, deployment, out)
    return CompressOutcome(current, report, stages, deployment)


def legacy_measure(measure: MeasureConfig | None, legacy: dict[str, Any], caller: str) -> MeasureConfig:
    """``measure`` (default: batch 32, 30 repeats), or one built from the keyword arguments of the previous release
    (``batch_size``, ``threads``, ``repeats``), with a deprecation warning."""
    unknown = sorted(set(legacy) - {"batch_size", "threads", "repeats"})
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword argument(s) {unknown}")
    if not legacy:
        return measure or MeasureConfig(batch_size=32, repeats=30)
    if measure is not None:
        raise ConfigError(f"{caller}: pass measure=MeasureConfig(...) or batch_size/threads/repeats, not both")
    warn_once(f"{caller}(batch_size=, threads=, repeats=)", "measure=MeasureConfig(batch_size=..., ...)")
    return MeasureConfig(**{"batch_size": 32, "repeats": 30, **legacy})


def _copy_final(stage: Stage, folder: Path) -> None:
    """The final stage's model files (a float checkpoint and its JSON, or an int8 model) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    src = Path(stage.path)
    for f in src.parent.glob(src.name + "*"):
        shutil.copy2(f, folder / f.name)
        note_written(folder / f.name)


def _weight_sparsity(model: nn.Module) -> float:
    weights = prunable_weights(model)
    total = sum(w.numel() for w in weights.values())
    return sum(int((w == 0).sum()) for w in weights.values()) / total if total else 0.0


def _slug(step: Config) -> str:
    """``L1FilterPruneConfig`` -> ``l1-filter-prune``: the step's folder name."""
    name = step.config_tag.removesuffix("Config") or "step"
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name).lower()


def _summary(model: nn.Module, data: DatasetSplits, previous: ModelSummary, measure: MeasureConfig) -> ModelSummary:
    if not isinstance(model, Int8Model):
        summary, _ = summarize(model, data, measure)
        return summary
    # an int8 model does the MACs of the float model it was made from (the previous stage), in int8
    return summarize_quantized(model, data, previous, model.size_bytes(), measure)


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
    try:
        state = json.loads(path.read_text())
        for record in state["stages"]:
            Stage.from_dict(record)  # validates every record
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{path} is corrupt ({type(exc).__name__}: {exc}); the run cannot continue from it: start over with "
            "restart=True (CLI: --restart), or use another output folder"
        ) from exc
    if not isinstance(state, dict) or state.get("recipe") != recipe.fingerprint() or state.get("model") != identity:
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
