"""The distillation config."""

from __future__ import annotations

import dataclasses

from effdl.core.config import Config, check_range

__all__ = ["DistillConfig"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillConfig(Config):
    """How a student learns from its teacher.

    Args:
        alpha: weight of the KD term; the task loss gets ``1 - alpha``.
        temperature: softmax temperature of the KD term.
        hints: ``{student layer: teacher layer}`` pairs for feature (hint) distillation; a learned 1x1 regressor
            maps the student's channels to the teacher's when they differ.
        hint_weight: weight of the summed hint losses.
        adapter_lr: learning rate (Adam) of those regressors.

    Example:
        >>> DistillConfig(alpha=0.5).temperature
        4.0
    """

    alpha: float = 0.9
    temperature: float = 4.0
    hints: dict[str, str] = dataclasses.field(default_factory=dict)
    hint_weight: float = 1.0
    adapter_lr: float = 1e-3

    def validate(self) -> None:
        check_range("alpha", self.alpha, 0.0, 1.0, hint="use alpha=0.9 (mostly the teacher)")
        check_range("temperature", self.temperature, 0.0, low_open=True, hint="use temperature=4")
        check_range("hint_weight", self.hint_weight, 0.0, hint="use hint_weight=1")
        check_range("adapter_lr", self.adapter_lr, 0.0, low_open=True, hint="use adapter_lr=1e-3")
