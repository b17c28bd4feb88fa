"""Training configuration."""

from __future__ import annotations

import dataclasses

from effdl.core.config import Config, check_choice, check_range

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    """Settings of one training run.

    Attributes:
        epochs: passes over the training data.
        batch_size: examples per step and process.
        optimizer: ``sgd`` (with ``momentum``, Nesterov off), ``adam`` or ``adamw``.
        lr: peak learning rate.
        momentum: SGD momentum.
        weight_decay: L2 (sgd, adam) or decoupled (adamw) weight decay.
        schedule: ``cosine`` (to zero over the run, per step), ``step`` (x ``gamma`` every ``step_epochs``) or
            ``constant``.
        step_epochs, gamma: the ``step`` schedule.
        label_smoothing: cross-entropy label smoothing.
        grad_clip: clip the global gradient norm to this value (None: off).
        seed: seeds initialization order, shuffling and dropout.
        eval_every: evaluate every this many epochs (and always after the last).
        checkpoint_every_steps: also save a resumable checkpoint every this many steps (0: at epoch ends only).
        progress: show progress bars (on a terminal).

    Example:
        >>> TrainConfig(epochs=5, lr=0.01).to_dict()["optimizer"]
        'adamw'
        >>> TrainConfig(lr=0)
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: lr must be in (0.0, inf), got lr=0; use lr=1e-3 for Adam(W), 0.1 for SGD
    """

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    step_epochs: int = 30
    gamma: float = 0.1
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    eval_every: int = 1
    checkpoint_every_steps: int = 0
    progress: bool = True

    def validate(self) -> None:
        """Checks every field."""
        check_range("epochs", self.epochs, 1, hint="use epochs=30")
        check_range("batch_size", self.batch_size, 1, hint="use batch_size=64")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("lr", self.lr, 0.0, low_open=True, hint="use lr=1e-3 for Adam(W), 0.1 for SGD")
        check_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_range("weight_decay", self.weight_decay, 0.0, hint="use weight_decay=0 to turn it off")
        check_choice("schedule", self.schedule, SCHEDULES)
        check_range("step_epochs", self.step_epochs, 1)
        check_range("gamma", self.gamma, 0.0, 1.0, low_open=True)
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True, hint="use 0.1")
        if self.grad_clip is not None:
            check_range("grad_clip", self.grad_clip, 0.0, low_open=True, hint="use grad_clip=1.0 or None")
        check_range("eval_every", self.eval_every, 1)
        check_range("checkpoint_every_steps", self.checkpoint_every_steps, 0, hint="use 0 to save at epoch ends only")
