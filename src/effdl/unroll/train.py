"""Training unrolled solvers: layer-wise (progressive) as in the LISTA papers, or jointly; resumable.

Layer-wise training (Chen et al. 2018, Sec. 4; Liu et al. 2019): for layer k = 1..K, train the network cut after
layer k on ``||x^k - x*||^2``, first only layer k's parameters at ``lr``, then all of layers 1..k at ``0.2 lr`` and
``0.02 lr``. Each stage stops after ``steps_per_stage`` steps or when the validation NMSE has not improved for
``patience`` steps, and keeps its best parameters. Joint training runs the same three learning rates on all layers
at once. Training problems are drawn fresh for every step from a seed that depends only on ``(seed, stage, step)``,
so a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effdl.core.checkpoint import load_checkpoint, save_checkpoint
from effdl.core.config import Config, check_choice, check_range
from effdl.core.errors import CheckpointError, ConfigError
from effdl.unroll.problem import Problem, nmse_db
from effdl.unroll.solvers import UnrolledSolver

__all__ = ["Stage", "TrainResult", "UnrollTrainConfig", "train_solver"]

log = logging.getLogger(__name__)

STATE_FILE = "train_state.safetensors"


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnrollTrainConfig(Config):
    """How to train an unrolled solver.

    Args:
        schedule: ``layerwise`` (progressive, as in the papers) or ``joint`` (all layers at once).
        lr: Adam's learning rate of the first stage (5e-4 in the papers).
        stage_decays: the learning rate of each stage as a multiple of ``lr``.
        steps_per_stage: most steps of one stage (layer-wise: of each layer's stages).
        joint_steps_per_stage: most steps of one stage of joint training.
        patience: a stage ends after this many steps without a better validation NMSE (0: never early).
        eval_every: steps between validation checks.
        batch_size: problems per step.
        val_size: problems in the fixed validation set.
        seed: seed of the training and validation problems.
        checkpoint_every: steps between resumable checkpoints inside a stage (stages always end with one).
        warm_start: layer-wise only: a new layer starts from the trained values of the layer before it instead of
            the initial ones (the papers start every layer from ISTA's values; warm starts converge faster).
        progress: show a progress bar.

    Example:
        >>> UnrollTrainConfig(schedule="joint").stage_decays
        (1.0, 0.2, 0.02)
        >>> UnrollTrainConfig(schedule="greedy")
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: schedule must be one of 'layerwise', 'joint', got schedule='greedy'
    """

    schedule: str = "layerwise"
    lr: float = 5e-4
    stage_decays: tuple[float, ...] = (1.0, 0.2, 0.02)
    steps_per_stage: int = 1000
    joint_steps_per_stage: int = 4000
    patience: int = 250
    eval_every: int = 25
    batch_size: int = 64
    val_size: int = 1000
    seed: int = 0
    checkpoint_every: int = 500
    warm_start: bool = True
    progress: bool = True

    def validate(self) -> None:
        check_choice("schedule", self.schedule, ("layerwise", "joint"))
        check_range("lr", self.lr, 0.0, low_open=True, hint="use lr=5e-4")
        if not self.stage_decays:
            raise ConfigError("stage_decays must list at least one stage, e.g. (1.0, 0.2, 0.02)")
        for d in self.stage_decays:
            check_range("stage_decays entries", d, 0.0, low_open=True, hint="use (1.0, 0.2, 0.02)")
        for name in ("steps_per_stage", "joint_steps_per_stage", "eval_every", "batch_size", "val_size"):
            check_range(name, getattr(self, name), 1)
        check_range("patience", self.patience, 0, hint="use patience=0 to always run steps_per_stage steps")
        check_range("seed", self.seed, 0, hint="use a non-negative seed")
        check_range("checkpoint_every", self.checkpoint_every, 0, hint="use 0 to checkpoint only between stages")


@dataclasses.dataclass
class Stage:
    """One stage of training: which layers it trains, at which learning rate, and what it reached.

    Example:
        >>> Stage(depth=2, first=1, lr=1e-4).to_dict()["trained_layers"]
        [2, 2]
    """

    depth: int
    first: int
    lr: float
    steps: int = 0
    val_nmse_db: float = float("nan")
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (layers 1-based, inclusive)."""
        return {
            "depth": self.depth,
            "trained_layers": [self.first + 1, self.depth],
            "lr": self.lr,
            "steps": self.steps,
            "val_nmse_db": self.val_nmse_db,
            "seconds": self.seconds,
        }


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_solver` did.

    Example:
        >>> TrainResult(stages=[], seconds=1.5, steps=0).to_dict()["seconds"]
        1.5
    """

    stages: list[Stage]
    seconds: float
    steps: int
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "seconds": self.seconds,
            "steps": self.steps,
            "resumed": self.resumed,
            "stages": [s.to_dict() for s in self.stages],
        }


def _plan(solver: UnrolledSolver, config: UnrollTrainConfig) -> list[Stage]:
    stages = []
    K = solver.num_layers
    if config.schedule == "layerwise":
        for k in range(1, K + 1):
            for i, decay in enumerate(config.stage_decays):
                stages.append(Stage(depth=k, first=k - 1 if i == 0 else 0, lr=config.lr * decay))
    else:
        stages = [Stage(depth=K, first=0, lr=config.lr * d) for d in config.stage_decays]
    return stages


def _params(solver: UnrolledSolver, stage: Stage) -> list[torch.nn.Parameter]:
    params = []
    for k in range(stage.first, stage.depth):
        params += solver.layer_parameters(k)
    return params


def _batch_seed(seed: int, stage: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, stage, step]).generate_state(1)[0])


def _val_nmse(solver: UnrolledSolver, val: tuple[torch.Tensor, torch.Tensor], depth: int) -> float:
    with torch.no_grad():
        return nmse_db(solver(val[0], depth), val[1])


def train_solver(
    solver: UnrolledSolver,
    problem: Problem,
    config: UnrollTrainConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
) -> TrainResult:
    """Trains ``solver`` in place on fresh problems from ``problem``; returns the stages' history.

    Args:
        solver: a learned solver (its ``A`` must be ``problem.A``).
        problem: the problem family that draws training and validation problems.
        config: the training settings.
        out_dir: where the resumable state ``train_state.safetensors`` is written (none without it).
        resume: continue from ``out_dir``'s state (same solver, problem and config); starts fresh if there is none.

    Example:
        >>> from effdl.unroll import build_solver, make_problem
        >>> p = make_problem(m=20, n=40)
        >>> net = build_solver("alista", p.A, 2)
        >>> cfg = UnrollTrainConfig(steps_per_stage=5, eval_every=5, val_size=32, progress=False)
        >>> len(train_solver(net, p, cfg).stages)  # 2 layers x 3 stages
        6
    """
    config = config or UnrollTrainConfig()
    if not solver.learned or not list(solver.parameters()):
        raise ConfigError(
            f"{solver.method} has no trainable parameters; HyperLISTA is tuned with tune_hyperlista, "
            "ISTA/FISTA need no training"
        )
    if solver.A.shape != problem.A.shape or not torch.equal(solver.A, problem.A):
        raise ConfigError("the solver was built for another dictionary than the problem's; build it from problem.A")
    stages = _plan(solver, config)
    val = problem.sample(config.val_size, seed=_batch_seed(config.seed, 0, 0))  # stage 0: validation
    state_path = Path(out_dir) / STATE_FILE if out_dir is not None else None
    start = _Progress()
    resumed = False
    if resume and state_path is not None and state_path.exists():
        start = _restore(solver, problem, config, state_path, stages)
        resumed = True
        log.info("resuming %s at stage %d/%d, step %d", solver.method, start.stage + 1, len(stages), start.step)
    total_steps = sum(s.steps for s in stages[: start.stage]) + start.step
    began = time.perf_counter() - start.seconds
    bar = _bar(config, stages, solver.method)
    if bar is not None:
        bar.update(start.stage)
    for index in range(start.stage, len(stages)):
        stage = stages[index]
        stage_began = time.perf_counter()
        params = _params(solver, stage)
        opt = torch.optim.Adam(params, lr=stage.lr)
        limit = config.joint_steps_per_stage if config.schedule == "joint" else config.steps_per_stage
        if index == start.stage and start.opt_state is not None:
            opt.load_state_dict(start.opt_state)
            best, best_val, bad, step = start.best, start.best_val, start.bad, start.step
            stage_began -= start.stage_seconds
        else:
            if config.warm_start and config.schedule == "layerwise" and stage.first == stage.depth - 1 > 0:
                _copy_layer(solver, stage.depth - 2, stage.depth - 1)
            best, best_val, bad, step = [p.detach().clone() for p in params], _val_nmse(solver, val, stage.depth), 0, 0
        while step < limit:
            b, x = problem.sample(config.batch_size, seed=_batch_seed(config.seed, index + 1, step))
            loss = (solver(b, stage.depth) - x).pow(2).sum(dim=1).mean()  # the papers' l2 loss
            if not torch.isfinite(loss):
                log.warning("non-finite loss at stage %d step %d; keeping the stage's best parameters", index, step)
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total_steps += 1
            if step % config.eval_every == 0:
                current = _val_nmse(solver, val, stage.depth)
                if current < best_val - 1e-4:
                    best, best_val, bad = [p.detach().clone() for p in params], current, 0
                else:
                    bad += config.eval_every
                if bar is not None:
                    bar.set_postfix_str(f"layer {stage.depth} val {best_val:.1f} dB", refresh=False)
                if config.patience and bad >= config.patience:
                    break
            if state_path is not None and config.checkpoint_every and step % config.checkpoint_every == 0:
                snapshot = _Progress(index, step, best, best_val, bad, opt.state_dict(),
                                     time.perf_counter() - began, time.perf_counter() - stage_began)  # fmt: skip
                _save(solver, config, stages, snapshot, state_path, problem)
        with torch.no_grad():
            for p, kept in zip(params, best, strict=True):
                p.copy_(kept)
        stage.steps, stage.val_nmse_db = step, best_val
        stage.seconds = time.perf_counter() - stage_began
        log.debug("stage %d/%d depth %d: %d steps, val %.2f dB", index + 1, len(stages), stage.depth, step, best_val)
        if bar is not None:
            bar.update(1)
        if state_path is not None:
            _save(solver, config, stages, _Progress(index + 1, 0, seconds=time.perf_counter() - began), state_path,
                  problem)  # fmt: skip
    if bar is not None:
        bar.close()
    return TrainResult(stages=stages, seconds=time.perf_counter() - began, steps=total_steps, resumed=resumed)


def _copy_layer(solver: UnrolledSolver, source: int, target: int) -> None:
    with torch.no_grad():
        for src, dst in zip(solver.layer_parameters(source), solver.layer_parameters(target), strict=True):
            dst.copy_(src)


@dataclasses.dataclass
class _Progress:
    stage: int = 0
    step: int = 0
    best: list[torch.Tensor] | None = None
    best_val: float = float("inf")
    bad: int = 0
    opt_state: dict | None = None
    seconds: float = 0.0
    stage_seconds: float = 0.0


def _bar(config: UnrollTrainConfig, stages: list[Stage], method: str):
    if not config.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=len(stages), desc=f"train {method} ({config.schedule})", unit="stage")


def _save(
    solver: UnrolledSolver,
    config: UnrollTrainConfig,
    stages: list[Stage],
    progress: _Progress,
    path: Path,
    problem: Problem,
) -> None:
    tensors = {f"model.{k}": v for k, v in solver.state_dict().items() if k not in ("A", "W", "A_pinv")}
    opt_meta: dict[str, Any] = {}
    if progress.best is not None:
        tensors.update({f"best.{i}": t for i, t in enumerate(progress.best)})
    if progress.opt_state is not None:
        for idx, slots in progress.opt_state["state"].items():
            for key, value in slots.items():
                tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value)
        opt_meta = {"param_groups": progress.opt_state["param_groups"], "params": list(progress.opt_state["state"])}
    meta = {
        "kind": "effdl.unroll.train_state",
        "method": solver.method,
        "fingerprint": problem.fingerprint(),
        "config": {k: v for k, v in config.to_dict().items() if k != "progress"},
        "stage": progress.stage,
        "step": progress.step,
        "best_val": progress.best_val if math.isfinite(progress.best_val) else None,
        "bad": progress.bad,
        "seconds": progress.seconds,
        "stage_seconds": progress.stage_seconds,
        "stages": [s.to_dict() for s in stages[: progress.stage]],
        "optimizer": opt_meta,
    }
    save_checkpoint(path, tensors, meta)


def _restore(
    solver: UnrolledSolver, problem: Problem, config: UnrollTrainConfig, path: Path, stages: list[Stage]
) -> _Progress:
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != "effdl.unroll.train_state":
        raise CheckpointError(f"{path} is not an effdl.unroll training state; remove it or pick another --out")
    mine = {k: v for k, v in config.to_dict().items() if k != "progress"}
    if meta.get("method") != solver.method or meta.get("fingerprint") != problem.fingerprint():
        raise CheckpointError(
            f"{path} belongs to a {meta.get('method')} run on another problem; resume with the same method and "
            "problem settings, or use a fresh --out"
        )
    if meta.get("config") != mine:
        changed = sorted(k for k in mine if meta.get("config", {}).get(k) != mine[k])
        raise CheckpointError(
            f"{path} was written with other training settings ({', '.join(changed)} differ); resume with the same "
            "settings, or use a fresh --out"
        )
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    missing = solver.load_state_dict(state, strict=False)
    if missing.unexpected_keys or [k for k in missing.missing_keys if k not in ("A", "W", "A_pinv")]:
        raise CheckpointError(f"{path} does not fit this {solver.method} solver ({missing}); use a fresh --out")
    for record, stage in zip(meta["stages"], stages, strict=False):
        stage.steps, stage.val_nmse_db, stage.seconds = record["steps"], record["val_nmse_db"], record["seconds"]
    progress = _Progress(stage=int(meta["stage"]), step=int(meta["step"]), seconds=float(meta["seconds"]))
    if meta["step"] > 0:
        count = len([k for k in tensors if k.startswith("best.")])
        progress.best = [tensors[f"best.{i}"].clone() for i in range(count)]
        progress.best_val = meta["best_val"] if meta["best_val"] is not None else float("inf")
        progress.bad = int(meta["bad"])
        progress.stage_seconds = float(meta["stage_seconds"])
        opt_meta = meta["optimizer"]
        opt_state: dict[str, Any] = {"param_groups": opt_meta["param_groups"], "state": {}}
        for idx in opt_meta["params"]:
            prefix = f"opt.{idx}."
            opt_state["state"][int(idx)] = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        progress.opt_state = opt_state
    return progress
