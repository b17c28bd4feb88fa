"""Lottery-ticket search: iterative magnitude pruning with rewinding (Frankle & Carbin, ICLR 2019; rewinding to an
early iteration as in Frankle et al., ICML 2020). Every round trains with the one training loop, so the search
sits beside the pipelines, above both pruning and training; the pieces (config, rewind point, masks) live in
:mod:`effdl.prune.lottery`."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from effdl.core.checkpoint import load_checkpoint, save_checkpoint
from effdl.core.errors import CheckpointError, ConfigError
from effdl.core.io import atomic_write_json
from effdl.data.base import DatasetSplits
from effdl.measure.evaluation import evaluate
from effdl.prune.lottery import LotteryResult, LotteryTicketConfig, RewindPoint
from effdl.prune.unstructured import KeepSparsity, apply_masks_, magnitude_masks, sparsity_of
from effdl.train.config import TrainConfig
from effdl.train.loop import Trainer

__all__ = ["find_lottery_ticket"]

log = logging.getLogger(__name__)


def find_lottery_ticket(
    model: nn.Module,
    data: DatasetSplits,
    train_config: TrainConfig,
    config: LotteryTicketConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
) -> LotteryResult:
    """Trains densely, then ``config.rounds`` times: prune by magnitude, rewind the survivors, retrain.

    With ``out_dir``, every round trains into ``out_dir/round_R`` (step-exact resumable) and finished rounds are
    recorded in ``out_dir/lottery.json``; ``resume=True`` continues where an interrupted search stopped.

    Args:
        model: the untrained model (trained in place; holds the final ticket at the end).
        data: dataset splits; accuracy is measured on ``data.test``.
        train_config: the training run repeated in every round.
        config: the :class:`LotteryTicketConfig` settings.
        out_dir: where to keep rounds (None: in memory only).
        resume: continue from ``out_dir``.

    Returns:
        A :class:`LotteryResult`.
    """
    out = Path(out_dir) if out_dir is not None else None
    log_path = out / "lottery.json" if out else None
    done: list[dict[str, float]] = []
    masks: dict[str, torch.Tensor] = {}
    rewind: dict[str, torch.Tensor] | None = None
    if resume and log_path is not None and log_path.is_file():
        done, masks, rewind = _load_progress(out, model)
    for r in range(len(done), config.rounds + 1):
        round_dir = out / f"round_{r}" if out else None
        can_resume = resume and round_dir is not None
        if r == 0:
            point = RewindPoint(config.rewind_step)
            Trainer(model, train_config, callbacks=[point], out_dir=round_dir).fit(data.train, resume=can_resume)
            if point.state is None:
                raise ConfigError(
                    f"rewind_step={config.rewind_step} is beyond the {train_config.epochs}-epoch run; use a smaller one"
                )
            rewind = point.state
        else:
            masks = magnitude_masks(model, config.round_config(r))
            model.load_state_dict(rewind)
            apply_masks_(model, masks)
            Trainer(model, train_config, callbacks=[KeepSparsity(masks)], out_dir=round_dir).fit(
                data.train, resume=can_resume
            )
        acc = evaluate(model, data.test)["accuracy"]
        done.append({"round": r, "sparsity": sparsity_of(masks) if masks else 0.0, "accuracy": acc})
        log.info("lottery round %d: sparsity %.1f%%, test accuracy %.2f%%", r, 100 * done[-1]["sparsity"], 100 * acc)
        if out is not None:
            _save_progress(out, done, model, masks, rewind)
    return LotteryResult(rounds=done, masks=masks, rewind_state=rewind or {})


def _save_progress(out: Path, done, model: nn.Module, masks, rewind) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"mask.{k}": v.to(torch.uint8) for k, v in masks.items()})
    tensors.update({f"rewind.{k}": v for k, v in rewind.items()})
    save_checkpoint(out / "lottery_state.safetensors", tensors, {"kind": "lottery", "rounds": len(done)})
    atomic_write_json(out / "lottery.json", {"rounds": done})


def _load_progress(out: Path, model: nn.Module):
    done = json.loads((out / "lottery.json").read_text())["rounds"]
    tensors, meta = load_checkpoint(out / "lottery_state.safetensors")
    if meta.get("rounds") != len(done):
        raise CheckpointError(f"{out} has inconsistent lottery files; start over in a new folder")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    masks = {k[5:]: v.bool() for k, v in tensors.items() if k.startswith("mask.")}
    rewind = {k[7:]: v for k, v in tensors.items() if k.startswith("rewind.")}
    log.info("resuming the lottery search after round %d", len(done) - 1)
    return done, masks, rewind
