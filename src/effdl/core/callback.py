"""The training-callback protocol: the hooks every training-time technique (fine-tuning masks, dynamic sparsity,
distillation, QAT) plugs into, and :class:`TrainerView`, what a callback sees of the loop. Both live in core so
that method packages implement callbacks without depending on the training loop; :mod:`effdl.train` runs them."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["Callback", "TrainerView"]


class TrainerView(Protocol):
    """What a callback may read from (and set on) the training loop that runs it; :class:`effdl.train.Trainer`
    provides it, and method packages type their callbacks against this protocol, not the loop.

    Attributes:
        model: the model being trained.
        optimizer: its optimizer.
        step: optimizer steps taken so far.
        total_steps: optimizer steps of the whole run.
        is_main: whether this process writes files and logs (rank 0 under torchrun).
        should_stop: set to True to end training after the current epoch.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int
    total_steps: int
    is_main: bool
    should_stop: bool


class Callback:
    """Base class with no-op hooks; subclass and override the ones you need.

    Fine-tuning tricks (distillation, pruning masks, dynamic sparsity, QAT) are callbacks, so they all share one
    loop. A callback with state returns it from :meth:`state_dict` (JSON-able values and tensors) so that a resumed
    run continues exactly.

    Example:
        >>> class CountSteps(Callback):
        ...     def __init__(self):
        ...         self.steps = 0
        ...     def on_batch_end(self, trainer, batch, loss):
        ...         self.steps += 1
        ...     def state_dict(self):
        ...         return {"steps": self.steps}
        ...     def load_state_dict(self, state):
        ...         self.steps = state["steps"]
        >>> CountSteps().state_dict()
        {'steps': 0}
    """

    def on_fit_start(self, trainer: TrainerView) -> None:
        """Before the first epoch (also after resuming)."""

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        """At the start of each epoch."""

    def on_batch_start(self, trainer: TrainerView, batch: tuple[torch.Tensor, ...]) -> None:
        """Before the forward pass of each step."""

    def on_loss(
        self, trainer: TrainerView, batch: tuple[torch.Tensor, ...], outputs: torch.Tensor, loss: torch.Tensor
    ) -> torch.Tensor:
        """May replace the loss (e.g. add a distillation term); returns the loss to back-propagate."""
        return loss

    def on_after_backward(self, trainer: TrainerView) -> None:
        """After ``loss.backward()``, before clipping and the optimizer step (e.g. mask gradients)."""

    def on_batch_end(self, trainer: TrainerView, batch: tuple[torch.Tensor, ...], loss: float) -> None:
        """After the optimizer and scheduler steps (e.g. re-apply masks, grow/prune connections)."""

    def on_epoch_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, float]) -> None:
        """After each epoch's evaluation, with that epoch's metrics."""

    def on_fit_end(self, trainer: TrainerView) -> None:
        """After the last epoch."""

    def state_dict(self) -> dict[str, Any]:
        """State to save in checkpoints: JSON-able values and tensors (nested in dicts and lists)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict` output."""
