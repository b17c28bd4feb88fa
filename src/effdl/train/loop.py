"""The one training loop: epochs of steps with callbacks, evaluation, resumable checkpoints and optional
data-parallel execution across processes."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from effdl.core.errors import ConfigError, NonFiniteError
from effdl.core.seed import get_rng_state, seed_everything, set_rng_state
from effdl.data.loaders import make_loader
from effdl.measure.evaluation import evaluate, targets_in
from effdl.train.callbacks import Callback
from effdl.train.config import TrainConfig
from effdl.train.distributed import DistContext
from effdl.train.optim import build_optimizer, build_scheduler
from effdl.train.state import load_train_state, save_train_state

__all__ = ["TrainResult", "Trainer"]

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns: one metrics dict per epoch, and the last one.

    Example:
        >>> TrainResult(history=[{"epoch": 1, "eval_accuracy": 0.9}]).final["eval_accuracy"]
        0.9
    """

    history: list[dict[str, float]]

    @property
    def final(self) -> dict[str, float]:
        """Metrics of the last epoch (empty if no epoch ran)."""
        return self.history[-1] if self.history else {}


class Trainer:
    """Trains a classifier with cross-entropy (or ``loss_fn``), calling :class:`Callback` hooks at every stage.

    With ``out_dir`` set, a resumable checkpoint ``out_dir/checkpoints/last.safetensors`` is written atomically
    after every epoch (and every ``checkpoint_every_steps`` steps); ``fit(..., resume=True)`` continues from it and
    ends with the same weights, bit for bit, as an uninterrupted run. Under torchrun the model is wrapped in
    ``DistributedDataParallel`` (gloo) and each process sees its shard of every epoch.

    Args:
        model: the module to train (in place).
        config: a :class:`TrainConfig`.
        callbacks: hooks, e.g. :class:`~effdl.train.CSVLogger`.
        out_dir: where checkpoints go (None: no checkpoints).
        loss_fn: ``f(outputs, targets) -> loss``; default cross-entropy with the config's label smoothing.

    Example:
        >>> x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
        >>> model = nn.Linear(4, 2)
        >>> cfg = TrainConfig(epochs=20, lr=0.05, batch_size=16, progress=False)
        >>> result = Trainer(model, cfg).fit(torch.utils.data.TensorDataset(x, y))
        >>> result.final["train_accuracy"] > 0.9
        True
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        *,
        callbacks: Sequence[Callback] = (),
        out_dir: str | os.PathLike | None = None,
        loss_fn: LossFn | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.callbacks = list(callbacks)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.loss_fn = loss_fn or nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self._default_loss = loss_fn is None
        self.dist = DistContext()
        self.epoch = 0
        self.step = 0
        self.batch_in_epoch = 0
        self.history: list[dict[str, float]] = []
        self._running = _fresh_running()  # this epoch so far (saved mid-epoch)
        self.steps_per_epoch = self.total_steps = 0  # known once fit() starts
        self.should_stop = False  # a callback sets it (e.g. at on_epoch_end) to end training early
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    @property
    def is_main(self) -> bool:
        """True in the process that writes files (rank 0)."""
        return self.dist.is_main

    @property
    def checkpoint_path(self) -> Path | None:
        """Path of the resumable checkpoint, or None without ``out_dir``."""
        return None if self.out_dir is None else self.out_dir / "checkpoints" / "last.safetensors"

    def fit(self, train_data: Dataset, eval_data: Dataset | None = None, *, resume: bool = False) -> TrainResult:
        """Runs the configured number of epochs (or what is left of them when resuming).

        Args:
            train_data: dataset of ``(input, label)`` pairs.
            eval_data: evaluated every ``eval_every`` epochs and after the last.
            resume: continue from ``out_dir/checkpoints/last.safetensors`` if it exists.
        """
        self.dist = DistContext.from_env()
        try:
            return self._fit(train_data, eval_data, resume=resume)
        finally:
            self.dist.close()

    def _fit(self, train_data: Dataset, eval_data: Dataset | None, *, resume: bool) -> TrainResult:
        cfg = self.config
        self.epoch = self.step = self.batch_in_epoch = 0  # a second fit() starts over unless it resumes
        self.history = []
        self._running = _fresh_running()
        seed_everything(cfg.seed)
        self._check_inputs(train_data)
        loader = make_loader(
            train_data,
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        steps_per_epoch = -(-len(loader.sampler) // cfg.batch_size)
        self.steps_per_epoch, self.total_steps = steps_per_epoch, steps_per_epoch * cfg.epochs
        self.should_stop = False
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, steps_per_epoch)
        net: nn.Module = self.model
        if self.dist.world_size > 1:
            net = nn.parallel.DistributedDataParallel(self.model)
        if resume:
            self._resume()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        while self.epoch < cfg.epochs and not self.should_stop:
            self._run_epoch(net, loader, steps_per_epoch, eval_data)
        for cb in self.callbacks:
            cb.on_fit_end(self)
        return TrainResult(history=list(self.history))

    def _run_epoch(self, net: nn.Module, loader, steps_per_epoch: int, eval_data: Dataset | None) -> None:
        cfg = self.config
        epoch = self.epoch
        loader.sampler.set_epoch(epoch, skip=self.batch_in_epoch * cfg.batch_size)
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch)
        self.model.train()
        t0 = time.perf_counter()
        run = self._running
        batches = _progress(
            loader,
            cfg.progress and self.is_main,
            f"epoch {epoch + 1}/{cfg.epochs}",
            total=steps_per_epoch,
            initial=self.batch_in_epoch,
        )
        for batch in batches:
            loss, out = self._step(net, batch)
            y = batch[1]
            if torch.is_tensor(out) and torch.is_tensor(y):
                n = targets_in(out, y)  # examples, or tokens for a language model's (batch, vocab, length) logits
                if out.dim() == y.dim() + 1:
                    run["correct"] += int((out.argmax(dim=1) == y).sum())
            else:  # structured outputs or targets (e.g. one per task): examples; the loss_fn knows what they mean
                n = len(batch[0])
            run["loss_sum"] += loss * n
            run["seen"] += n
            self.step += 1
            self.batch_in_epoch += 1
            if hasattr(batches, "set_postfix"):
                batches.set_postfix(loss=f"{loss:.4f}")
            if cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0:
                self.save_checkpoint()
        self.epoch += 1
        self.batch_in_epoch = 0
        metrics: dict[str, float | None] = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": self.dist.mean(run["loss_sum"] / max(run["seen"], 1)),
            "train_accuracy": self.dist.mean(run["correct"] / max(run["seen"], 1)),
            "epoch_time_s": time.perf_counter() - t0,
        }
        self._running = _fresh_running()
        if eval_data is not None:  # the columns are always there (None between evaluations) so logs stay rectangular
            due = self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs
            ev = evaluate(self.model, eval_data) if due else {"loss": None, "accuracy": None}
            metrics["eval_loss"], metrics["eval_accuracy"] = ev["loss"], ev["accuracy"]
        self.history.append(metrics)
        if self.is_main:
            log.info(
                "epoch %d/%d %s",
                self.epoch,
                cfg.epochs,
                " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k not in ("epoch", "step") and v is not None),
            )
        for cb in self.callbacks:
            cb.on_epoch_end(self, self.epoch, metrics)
        self.save_checkpoint()

    def _step(self, net: nn.Module, batch) -> tuple[float, torch.Tensor]:
        cfg = self.config
        for cb in self.callbacks:
            cb.on_batch_start(self, batch)
        x, y = batch[0], batch[1]
        out = net(x)
        loss = self.loss_fn(out, y)
        for cb in self.callbacks:
            loss = cb.on_loss(self, batch, out, loss)
        if not bool(torch.isfinite(loss.detach()).all()):  # before the update: the model keeps its last finite state
            raise NonFiniteError(
                f"the training loss became {float(loss.detach())} at step {self.step + 1} (epoch {self.epoch + 1}); "
                f"training stopped before updating the model, so it and the last checkpoint hold the last finite "
                f"state; lower the learning rate (lr={cfg.lr}), set grad_clip, or check the data for NaN/Inf"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for cb in self.callbacks:
            cb.on_after_backward(self)
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        value = float(loss.detach())
        for cb in self.callbacks:
            cb.on_batch_end(self, batch, value)
        return value, _detach(out)

    def save_checkpoint(self) -> Path | None:
        """Writes the resumable checkpoint (main process only); returns its path. Refuses (keeping the previous
        checkpoint) when a weight is NaN or infinite."""
        bad = next((n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p.detach()).all())), None)
        if bad is not None:
            raise NonFiniteError(
                f"parameter {bad!r} became NaN or infinite by step {self.step}; the last checkpoint was kept (not "
                f"overwritten); lower the learning rate (lr={self.config.lr}) or set grad_clip"
            )
        path = self.checkpoint_path
        if path is None or not self.is_main:
            self.dist.barrier()
            return None
        save_train_state(
            path,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            position={"epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch},
            rng=get_rng_state(),
            callbacks=dict(
                zip(_callback_keys(self.callbacks), (cb.state_dict() for cb in self.callbacks), strict=True)
            ),
            extra={"history": self.history, "running": self._running, "config": self.config.to_dict()},
        )
        self.dist.barrier()
        return path

    def _check_inputs(self, train_data: Dataset) -> None:
        """Clear errors, before any work, for what would otherwise fail deep inside torch."""
        if not any(p.requires_grad for p in self.model.parameters()):
            raise ConfigError(
                f"{type(self.model).__name__} has no trainable parameters (none with requires_grad=True); unfreeze "
                "the layers to train (param.requires_grad_(True)) or skip training"
            )
        if len(train_data) == 0:  # type: ignore[arg-type]
            raise ConfigError("the training set is empty; check the dataset and its options")
        if self._default_loss:
            target = torch.as_tensor(train_data[0][1])
            if target.dim() == 0 and target.is_floating_point():
                raise ConfigError(
                    f"the labels are floating-point numbers (e.g. {float(target):g}); cross-entropy needs integer "
                    "class indices: convert them (labels.long()), or pass a loss_fn for regression targets"
                )

    def _resume(self) -> None:
        path = self.checkpoint_path
        if path is None:
            raise ConfigError("resume=True needs out_dir, where the run's checkpoints are; pass out_dir=")
        if not path.is_file():
            log.info("no checkpoint at %s; starting from scratch", path)
            return
        meta: dict[str, Any] = load_train_state(
            path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler
        )
        saved, now = meta.get("config", {}), self.config.to_dict()
        changed = [
            f"{k}={saved[k]!r} there, {k}={now[k]!r} here"
            for k in now
            if k != "progress" and k in saved and saved[k] != now[k]
        ]
        if changed:
            raise ConfigError(
                f"{path} was written with other settings ({'; '.join(changed)}); resume with the same settings, "
                "or train into a new output folder"
            )
        pos = meta["position"]
        self.epoch, self.step, self.batch_in_epoch = pos["epoch"], pos["step"], pos["batch_in_epoch"]
        self.history = list(meta.get("history", []))
        self._running = dict(meta.get("running", self._running))
        states = meta.get("callbacks", {})
        for key, cb in zip(_callback_keys(self.callbacks), self.callbacks, strict=True):
            if key in states:
                cb.load_state_dict(states[key])
            else:
                log.warning("checkpoint %s has no state for callback %s; it starts fresh", path, key)
        set_rng_state(meta["rng"])
        log.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.step)


def _fresh_running() -> dict[str, float]:
    return {"loss_sum": 0.0, "correct": 0, "seen": 0}


def _callback_keys(callbacks: list[Callback]) -> list[str]:
    """Stable names for callback states: the class name, numbered when a class appears more than once."""
    keys, seen = [], {}
    for cb in callbacks:
        name = type(cb).__name__
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return keys


def _progress(iterable, enabled: bool, desc: str, *, total: int, initial: int):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, initial=initial, leave=False, disable=None, dynamic_ncols=True)


def _detach(out: Any) -> Any:
    """``out`` detached: a tensor, or a dict / list / tuple of them (e.g. one output per task)."""
    if torch.is_tensor(out):
        return out.detach()
    if isinstance(out, dict):
        return {k: _detach(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_detach(v) for v in out)
    return out
