"""Dynamic sparse training: train a sparse network from scratch, moving its connections as it learns.

- SET (Mocanu et al. 2018): drop the smallest-magnitude weights, regrow as many at random.
- RigL (Evci et al., ICML 2020): drop the smallest-magnitude weights, regrow where the dense gradient is largest.
- static: the initial random mask is kept (the baseline both are compared with).

Initial per-layer densities follow Erdős–Rényi-Kernel (ERK) or are uniform.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from effdl.core.callback import Callback, TrainerView
from effdl.core.config import Config, check_choice, check_range, rename_fields
from effdl.core.errors import ConfigError
from effdl.prune.unstructured import apply_masks_, prunable_weights

__all__ = ["DynamicSparseTraining", "DynamicSparsityConfig", "erk_densities"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DynamicSparsityConfig(Config):
    """Settings of dynamic sparse training.

    Attributes:
        method: ``"rigl"``, ``"set"`` or ``"static"``.
        ratio: overall fraction of zero weights (the sparsity) in the Conv/Linear layers, in [0, 1).
        distribution: ``"erk"`` (Erdős–Rényi-Kernel, Evci et al. 2020 sec. 3) or ``"uniform"``.
        update_every: steps between connection updates (RigL's delta T).
        drop_fraction: fraction of active weights moved at the first update (alpha), decayed with a cosine.
        end_fraction: updates stop after this fraction of training (RigL's T_end = 0.75).
        ignore: module names or regexes kept dense.
        seed: seed of the random masks and SET's regrowth (independent of the training seed).

    Example:
        >>> DynamicSparsityConfig(method="rigl", ratio=0.9).distribution
        'erk'
    """

    config_version = 2  # version 1 called the ratio "sparsity"
    method: str = "rigl"
    ratio: float = 0.9
    distribution: str = "erk"
    update_every: int = 100
    drop_fraction: float = 0.3
    end_fraction: float = 0.75
    ignore: tuple[str, ...] = ()
    seed: int = 0

    def validate(self) -> None:
        check_choice("method", self.method, ("rigl", "set", "static"))
        check_choice("distribution", self.distribution, ("erk", "uniform"))
        check_range("ratio", self.ratio, 0.0, 1.0, high_open=True, hint="use ratio=0.9 for 90% zeros")
        check_range("drop_fraction", self.drop_fraction, 0.0, 1.0, high_open=True)
        check_range("end_fraction", self.end_fraction, 0.0, 1.0)
        if self.update_every < 1:
            raise ConfigError(f"update_every must be >= 1 step, got {self.update_every}")

    @classmethod
    def upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        return rename_fields(cls, data, {"sparsity": "ratio"})


def erk_densities(shapes: Mapping[str, Sequence[int]], sparsity: float, *, kernel: bool = True) -> dict[str, float]:
    """Per-layer densities whose weighted mean is ``1 - sparsity``, proportional to
    ``sum(shape) / prod(shape)`` (ERK; without kernel dims: Erdős–Rényi), capped at 1 (Evci et al. 2020, app. D).

    Example:
        >>> d = erk_densities({"a": (10, 10), "b": (100, 100)}, 0.9)
        >>> d["a"] > d["b"], round((d["a"] * 100 + d["b"] * 10000) / 10100, 3)
        (True, 0.1)
    """
    numel = {k: math.prod(s) for k, s in shapes.items()}
    raw = {k: (sum(s) if kernel else sum(s[:2])) / numel[k] for k, s in shapes.items()}
    target = (1.0 - sparsity) * sum(numel.values())
    dense: set[str] = set()
    while True:
        budget = target - sum(numel[k] for k in dense)
        free = [k for k in shapes if k not in dense]
        if not free:
            break
        eps = budget / sum(raw[k] * numel[k] for k in free)
        over = [k for k in free if eps * raw[k] > 1.0]
        if not over:
            break
        dense.update(over)
    return {k: 1.0 if k in dense else eps * raw[k] for k in shapes}


class DynamicSparseTraining(Callback):
    """Training callback for SET / RigL / static sparse training (see :class:`DynamicSparsityConfig`).

    The masks (and the random generator) are part of its state, so a resumed run continues exactly.

    Example:
        >>> cb = DynamicSparseTraining(DynamicSparsityConfig(method="set", ratio=0.8))
        >>> cb.config.method
        'set'
    """

    def __init__(self, config: DynamicSparsityConfig) -> None:
        self.config = config
        self.masks: dict[str, torch.Tensor] = {}
        self.generator = torch.Generator().manual_seed(config.seed)
        self.updates = 0
        self._grads: dict[str, torch.Tensor] = {}

    # -- initial masks
    def init_masks(self, model: nn.Module) -> None:
        """Random masks with ERK (or uniform) densities; zeroes the dropped weights."""
        weights = prunable_weights(model, self.config.ignore)
        shapes = {k: tuple(w.shape) for k, w in weights.items()}
        if self.config.distribution == "erk":
            dens = erk_densities(shapes, self.config.ratio)
        else:
            dens = dict.fromkeys(shapes, 1.0 - self.config.ratio)
        for name, w in weights.items():
            n_keep = max(1, round(dens[name] * w.numel()))
            order = torch.randperm(w.numel(), generator=self.generator)[:n_keep]
            mask = torch.zeros(w.numel(), dtype=torch.bool)
            mask[order] = True
            self.masks[name] = mask.view_as(w)
        apply_masks_(model, self.masks)
        log.info(
            "sparse training (%s, %s): %.1f%% of %d weights zero",
            self.config.method,
            self.config.distribution,
            100 * self.sparsity,
            sum(m.numel() for m in self.masks.values()),
        )

    @property
    def sparsity(self) -> float:
        """Current fraction of zero weights over the masked layers."""
        total = sum(m.numel() for m in self.masks.values())
        return 1.0 - sum(int(m.sum()) for m in self.masks.values()) / max(total, 1)

    # -- hooks
    def on_fit_start(self, trainer: TrainerView) -> None:
        if not self.masks:
            self.init_masks(trainer.model)
        else:
            apply_masks_(trainer.model, self.masks)

    def _update_due(self, trainer: TrainerView) -> bool:
        done = trainer.step + 1  # the step being taken now
        end = self.config.end_fraction * trainer.total_steps
        return self.config.method != "static" and done % self.config.update_every == 0 and done < end

    def on_after_backward(self, trainer: TrainerView) -> None:
        update = self._update_due(trainer)
        for name, mask in self.masks.items():
            w = trainer.model.get_submodule(name).weight
            if w.grad is None:
                continue
            if update and self.config.method == "rigl":
                self._grads[name] = w.grad.detach().abs().clone()  # dense gradient, RigL's growth criterion
            w.grad.mul_(mask.to(w.grad.dtype))

    def on_batch_end(self, trainer: TrainerView, batch, loss: float) -> None:
        if self._update_due(trainer):
            self._move_connections(trainer)
        apply_masks_(trainer.model, self.masks)

    def _drop_fraction(self, trainer: TrainerView) -> float:
        end = max(self.config.end_fraction * trainer.total_steps, 1)
        return self.config.drop_fraction / 2 * (1 + math.cos(math.pi * (trainer.step + 1) / end))  # RigL eq. 1

    def _move_connections(self, trainer: TrainerView) -> None:
        frac = self._drop_fraction(trainer)
        with torch.no_grad():
            for name, mask in self.masks.items():
                w = trainer.model.get_submodule(name).weight
                flat_mask = mask.flatten().clone()
                active = int(flat_mask.sum())
                k = int(frac * active)
                if k == 0 or active == flat_mask.numel():
                    continue
                # drop: the k active weights of smallest magnitude
                mag = torch.where(
                    flat_mask, w.detach().abs().flatten(), torch.full_like(flat_mask, math.inf, dtype=w.dtype)
                )
                drop = torch.argsort(mag, stable=True)[:k]
                flat_mask[drop] = False
                # grow: k inactive positions (the dropped ones may come back), by gradient or at random
                if self.config.method == "rigl" and name in self._grads:
                    score = self._grads[name].flatten().clone()
                else:
                    score = torch.rand(flat_mask.numel(), generator=self.generator)
                score[flat_mask] = -math.inf
                grow = torch.argsort(score, descending=True, stable=True)[:k]
                flat_mask[grow] = True
                new = grow[~mask.flatten()[grow]]  # truly new connections start at zero (RigL) ...
                w.view(-1)[new] = 0.0
                _reset_optimizer_state(trainer.optimizer, w, new)  # ... with no stale momentum
                self.masks[name] = flat_mask.view_as(mask)
        self._grads.clear()
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "masks": {k: v.to(torch.uint8) for k, v in self.masks.items()},
            "generator": self.generator.get_state(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = {k: v.bool() for k, v in state.get("masks", {}).items()}
        if "generator" in state:
            self.generator.set_state(state["generator"].to(torch.uint8))
        self.updates = int(state.get("updates", 0))


def _reset_optimizer_state(optimizer: torch.optim.Optimizer | None, param: torch.Tensor, idx: torch.Tensor) -> None:
    if optimizer is None or len(idx) == 0:
        return
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value.view(-1)[idx] = 0.0
