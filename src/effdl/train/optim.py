"""Optimizers and learning-rate schedules from a :class:`TrainConfig`."""

from __future__ import annotations

import torch
from torch import nn

from effdl.train.config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler"]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD, Adam or AdamW over the model's trainable parameters.

    Example:
        >>> type(build_optimizer(nn.Linear(2, 2), TrainConfig(optimizer="sgd", lr=0.1))).__name__
        'SGD'
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step schedule: cosine to zero over the run, step decay every ``step_epochs``, or constant.

    Example:
        >>> opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
        >>> sched = build_scheduler(opt, TrainConfig(epochs=2, schedule="step", step_epochs=1, gamma=0.5), 3)
        >>> for _ in range(3):
        ...     opt.step(); sched.step()
        >>> opt.param_groups[0]["lr"]
        0.5
    """
    total = config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total))
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=config.step_epochs * steps_per_epoch, gamma=config.gamma
        )
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
