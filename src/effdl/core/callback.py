"""The training-callback protocol: the hooks every training-time technique (fine-tuning masks, dynamic sparsity,
distillation, QAT) plugs into. It lives in core so that method packages can implement it without depending on the
training loop; :mod:`effdl.train` runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from effdl.train.loop import Trainer

__all__ = ["Callback"]


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

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch (also after resuming)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """At the start of each epoch."""

    def on_batch_start(self, trainer: Trainer, batch: tuple[torch.Tensor, ...]) -> None:
        """Before the forward pass of each step."""

    def on_loss(
        self, trainer: Trainer, batch: tuple[torch.Tensor, ...], outputs: torch.Tensor, loss: torch.Tensor
    ) -> torch.Tensor:
        """May replace the loss (e.g. add a distillation term); returns the loss to back-propagate."""
        return loss

    def on_after_backward(self, trainer: Trainer) -> None:
        """After ``loss.backward()``, before clipping and the optimizer step (e.g. mask gradients)."""

    def on_batch_end(self, trainer: Trainer, batch: tuple[torch.Tensor, ...], loss: float) -> None:
        """After the optimizer and scheduler steps (e.g. re-apply masks, grow/prune connections)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        """After each epoch's evaluation, with that epoch's metrics."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch."""

    def state_dict(self) -> dict[str, Any]:
        """State to save in checkpoints: JSON-able values and tensors (nested in dicts and lists)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict` output."""
