"""Knowledge distillation as a callback of the training loop."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from effdl.core.callback import Callback, TrainerView
from effdl.core.errors import ConfigError
from effdl.distill.config import DistillConfig
from effdl.distill.losses import hint_loss, kd_loss

__all__ = ["Distillation"]

log = logging.getLogger(__name__)


class Distillation(Callback):
    """Trains the student (the trainer's model) against a fixed teacher: the loss becomes
    ``(1 - alpha) * task loss + alpha * KD + hint_weight * sum of hint losses`` (Hinton et al. 2015; FitNets hints,
    Romero et al. 2015). The teacher runs in eval mode without gradients on each training batch.

    Args:
        teacher: the trained model to imitate (not changed).
        config: weights, temperature and hint layer pairs.

    Example:
        >>> from effdl.models import create_model
        >>> teacher = create_model("test_mlp")
        >>> cb = Distillation(teacher, DistillConfig(alpha=0.5))
        >>> cb.config.alpha
        0.5
    """

    def __init__(self, teacher: nn.Module, config: DistillConfig | None = None) -> None:
        if not isinstance(teacher, nn.Module):
            raise ConfigError(f"teacher must be an nn.Module, got {type(teacher).__name__}")
        self.teacher = teacher
        self.config = config or DistillConfig()
        self.adapters = nn.ModuleDict()
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending: dict[str, Any] | None = None
        self._hooks: list = []
        self._student_feats: dict[str, torch.Tensor] = {}
        self._teacher_feats: dict[str, torch.Tensor] = {}
        self.last: dict[str, float] = {}

    def on_fit_start(self, trainer: TrainerView) -> None:
        self.teacher.eval()  # its forward runs under no_grad; its parameters are left as they are (not frozen)
        self._remove_hooks()
        student = dict(trainer.model.named_modules())
        teacher = dict(self.teacher.named_modules())
        for s_name, t_name in self.config.hints.items():
            for name, modules, side in ((s_name, student, "student"), (t_name, teacher, "teacher")):
                if name not in modules:
                    raise ConfigError(f"hint layer {name!r} is not a module of the {side}; see model.named_modules()")
            self._hooks.append(_feature_hook(student[s_name], self._student_feats, s_name, training_only=True))
            self._hooks.append(_feature_hook(teacher[t_name], self._teacher_feats, s_name, training_only=False))

    def on_loss(self, trainer: TrainerView, batch, outputs: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        with torch.no_grad():
            teacher_logits = self.teacher(batch[0])
        kd = kd_loss(outputs, teacher_logits, cfg.temperature)
        total = (1 - cfg.alpha) * loss + cfg.alpha * kd
        self.last = {"kd": float(kd.detach())}
        if cfg.hints:
            hints = []
            for name in cfg.hints:
                s, t = self._student_feats.pop(name), self._teacher_feats.pop(name)
                hints.append(hint_loss(self._adapter(name, s, t)(s), t))
            hint = torch.stack(hints).sum()
            total = total + cfg.hint_weight * hint
            self.last["hint"] = float(hint.detach())
        return total

    def on_batch_end(self, trainer: TrainerView, batch, loss: float) -> None:
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def on_fit_end(self, trainer: TrainerView) -> None:
        self._remove_hooks()

    def state_dict(self) -> dict[str, Any]:
        if self.optimizer is None:
            return {}
        opt = self.optimizer.state_dict()
        # checkpoints hold JSON metadata, whose keys are strings: key the per-parameter state by str(index)
        opt = {"state": {str(k): v for k, v in opt["state"].items()}, "param_groups": opt["param_groups"]}
        return {"adapters": dict(self.adapters.state_dict()), "optimizer": opt}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state or None  # adapters are built on the first batch, when the feature shapes are known

    def _adapter(self, name: str, s: torch.Tensor, t: torch.Tensor) -> nn.Module:
        key = name.replace(".", "__")
        if key not in self.adapters:
            if s.shape[2:] != t.shape[2:] or s.dim() != t.dim():
                raise ConfigError(
                    f"hint {name!r}: student feature {tuple(s.shape)} and teacher feature {tuple(t.shape)} differ in "
                    "more than channels; pick layers with the same spatial size"
                )
            with torch.random.fork_rng(devices=[]):  # a fixed init that leaves the run's random stream alone,
                torch.manual_seed(len(self.adapters))  # so a resumed run (which builds it later) stays exact
                self.adapters[key] = _regressor(s.shape[1], t.shape[1], s.dim()).to(s.device)
            if len(self.adapters) == len(self.config.hints):
                params = list(self.adapters.parameters())
                self.optimizer = torch.optim.Adam(params, lr=self.config.adapter_lr) if params else None
                if self._pending and self.optimizer is not None:
                    self.adapters.load_state_dict(self._pending["adapters"])
                    opt = self._pending["optimizer"]
                    state = {int(k): v for k, v in opt["state"].items()}
                    self.optimizer.load_state_dict({"state": state, "param_groups": opt["param_groups"]})
                    self._pending = None
        return self.adapters[key]

    def _remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


def _feature_hook(module: nn.Module, store: dict[str, torch.Tensor], key: str, *, training_only: bool):
    """A forward hook that keeps ``module``'s output in ``store[key]``."""

    def hook(mod, inputs, output):
        if mod.training or not training_only:
            store[key] = output

    return module.register_forward_hook(hook)


def _regressor(c_in: int, c_out: int, dims: int) -> nn.Module:
    """FitNets' regressor: a 1x1 convolution (or a linear map on vectors) from the student's channels to the
    teacher's; the identity when they agree."""
    if c_in == c_out:
        return nn.Identity()
    if dims == 2:
        return nn.Linear(c_in, c_out, bias=False)
    conv = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}[dims]
    return conv(c_in, c_out, 1, bias=False)
