"""Unstructured magnitude pruning: masks over individual weights, layer-wise or global, kept through fine-tuning
(optionally reached gradually on the cubic schedule of Zhu & Gupta 2017)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from effdl.core.callback import Callback, TrainerView
from effdl.core.config import Config, check_choice, check_range, last_match, name_matches, rename_fields
from effdl.core.errors import ConfigError

__all__ = [
    "GradualMagnitudePruning",
    "KeepSparsity",
    "MagnitudePruneConfig",
    "apply_masks_",
    "check_n_m",
    "cubic_sparsity",
    "magnitude_masks",
    "masks_from_zeros",
    "n_m_mask",
    "prunable_weights",
    "sparsity_of",
]

log = logging.getLogger(__name__)

Masks = dict[str, torch.Tensor]  # module name -> bool mask shaped like its weight (True = kept)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MagnitudePruneConfig(Config):
    """Zero the smallest-magnitude weights of every Conv and Linear layer.

    Attributes:
        ratio: fraction of weights zeroed (the sparsity), in [0, 1).
        scope: ``"layer"`` (each layer reaches ``sparsity``) or ``"global"`` (one threshold over all layers).
        per_layer: ``{module name or regex: ratio}`` overrides (layer scope; under global scope, the matching
            layers are pruned layer-wise and left out of the global ranking).
        ignore: module names or regexes left dense.
        n_m: ``(N, M)``: keep the N largest of every M consecutive weights of each output row (layer scope; the
            ratio must be ``1 - N/M``).

    Example:
        >>> MagnitudePruneConfig(ratio=0.9, scope="global").scope
        'global'
    """

    config_version = 2  # version 1 called the ratio "sparsity"
    ratio: float = 0.5
    scope: str = "global"
    per_layer: dict[str, float] = dataclasses.field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    n_m: tuple[int, int] | None = None

    def validate(self) -> None:
        check_range("ratio", self.ratio, 0.0, 1.0, high_open=True, hint="use ratio=0.9 to zero 90% of weights")
        check_choice("scope", self.scope, ("layer", "global"))
        check_n_m(self.n_m, self.ratio)
        if self.n_m and (self.scope != "layer" or self.per_layer):
            raise ConfigError("n_m is a per-row pattern: use it with scope='layer' and no per_layer ratios")
        for name, s in self.per_layer.items():
            check_range(f"per_layer[{name!r}]", s, 0.0, 1.0, high_open=True)

    def describe(self) -> str:
        return f"prune magnitude {f'{self.n_m[0]}:{self.n_m[1]}' if self.n_m else f'{self.ratio:.0%}'}"

    @classmethod
    def upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        return rename_fields(cls, data, {"sparsity": "ratio"})


def check_n_m(n_m: tuple[int, int] | None, ratio: float) -> None:
    """Checks an N:M pattern (N kept of every M) against the ratio it implies.

    Example:
        >>> check_n_m((2, 4), 0.5)
        >>> check_n_m((4, 4), 0.0)
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: n_m=(4, 4) keeps N=4 of every M=4 weights; N must be in [1, M), e.g. n_m=(2, 4)
    """
    if n_m is None:
        return
    if len(n_m) != 2 or not all(isinstance(v, int) for v in n_m):
        raise ConfigError(f"n_m must be two integers (N kept of every M), got n_m={n_m!r}; e.g. n_m=(2, 4)")
    n, m = n_m
    if not 1 <= n < m:
        raise ConfigError(f"n_m={tuple(n_m)} keeps N={n} of every M={m} weights; N must be in [1, M), e.g. n_m=(2, 4)")
    implied = 1 - n / m
    if abs(ratio - implied) > 1e-9:
        raise ConfigError(
            f"n_m={tuple(n_m)} zeroes {implied:.0%} of the weights but ratio={ratio}; pass ratio={implied:g} with it "
            "(or leave n_m out for unstructured sparsity)"
        )


def n_m_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keeps the ``n`` highest scores of every ``m`` consecutive entries of each row: bool mask like ``scores``.

    Example:
        >>> n_m_mask(torch.tensor([[1.0, 4.0, 2.0, 3.0]]), 2, 4).int().tolist()
        [[0, 1, 0, 1]]
    """
    rows, cols = scores.shape[0], scores[0].numel()
    if cols % m:
        raise ConfigError(f"N:M needs the input features ({cols}) to be a multiple of M={m}")
    g = scores.reshape(rows, cols // m, m)
    keep = torch.zeros_like(g, dtype=torch.bool)
    keep.scatter_(2, g.topk(n, dim=2, sorted=False).indices, True)
    return keep.reshape(scores.shape)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name_matches(name, p) for p in patterns)


def prunable_weights(model: nn.Module, ignore: Sequence[str] = ()) -> dict[str, nn.Parameter]:
    """The ``weight`` of every Conv/Linear module not ignored, by module name.

    Example:
        >>> list(prunable_weights(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))))
        ['0', '2']
    """
    return {
        name: m.weight
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)
        and isinstance(getattr(m, "weight", None), nn.Parameter)
        and not _matches(name, ignore)
    }


def _topk_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    if keep > 0:
        order = torch.argsort(scores.flatten(), descending=True, stable=True)
        mask[order[:keep]] = True
    return mask.view_as(scores)


def magnitude_masks(model: nn.Module, config: MagnitudePruneConfig) -> Masks:
    """Masks that keep the largest ``|w|`` (pure: the model is not changed).

    Example:
        >>> m = nn.Linear(4, 1); _ = m.weight.data.copy_(torch.tensor([[1.0, -4.0, 2.0, 3.0]]))
        >>> magnitude_masks(m, MagnitudePruneConfig(ratio=0.5))[""].int().tolist()
        [[0, 1, 0, 1]]
    """
    weights = prunable_weights(model, config.ignore)
    if not weights:
        raise ConfigError(f"{type(model).__name__} has no Conv or Linear weights to prune (ignore={config.ignore})")
    masks: Masks = {}
    ranked = {}
    for name, w in weights.items():
        own = last_match(name, config.per_layer)
        if config.n_m is not None:
            masks[name] = n_m_mask(w.detach().abs().reshape(w.shape[0], -1), *config.n_m).view_as(w)
        elif config.scope == "layer" or own is not None:
            s = config.ratio if own is None else own
            masks[name] = _topk_mask(w.detach().abs(), round(w.numel() * (1 - s)))
        else:
            ranked[name] = w
    if ranked:
        flat = torch.cat([w.detach().abs().flatten() for w in ranked.values()])
        keep = _topk_mask(flat, round(flat.numel() * (1 - config.ratio)))
        offset = 0
        for name, w in ranked.items():
            masks[name] = keep[offset : offset + w.numel()].view_as(w).clone()
            offset += w.numel()
    return masks


def apply_masks_(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zeroes the weights the masks drop (in place).

    Example:
        >>> m = nn.Linear(2, 1)
        >>> apply_masks_(m, {"": torch.tensor([[True, False]])})
        >>> m.weight[0, 1].item()
        0.0
    """
    with torch.no_grad():
        for name, mask in masks.items():
            w = model.get_submodule(name).weight
            if w.shape != mask.shape:
                raise ConfigError(
                    f"mask for {name!r} has shape {tuple(mask.shape)} but the weight has {tuple(w.shape)}; "
                    "masks must come from this model"
                )
            w.masked_fill_(~mask.bool(), 0.0)


def masks_from_zeros(model: nn.Module, ignore: Sequence[str] = ()) -> Masks:
    """Masks that keep every non-zero weight (how a pruned model's masks are recovered)."""
    return {name: w.detach() != 0 for name, w in prunable_weights(model, ignore).items()}


def sparsity_of(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of masked-out weights over all masks.

    Example:
        >>> sparsity_of({"a": torch.tensor([True, False, False, False])})
        0.75
    """
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / max(total, 1)


class KeepSparsity(Callback):
    """Keeps pruned weights at zero while training: masks their gradients and re-applies the masks after every
    optimizer step (so momentum and weight decay cannot revive them).

    Args:
        masks: module name -> bool mask; default: the model's non-zero pattern when training starts.

    Example:
        >>> KeepSparsity().state_dict()
        {'masks': {}}
    """

    def __init__(self, masks: Mapping[str, torch.Tensor] | None = None) -> None:
        self.masks: Masks = {k: v.bool() for k, v in (masks or {}).items()}

    def on_fit_start(self, trainer: TrainerView) -> None:
        if not self.masks:
            self.masks = masks_from_zeros(trainer.model)
        apply_masks_(trainer.model, self.masks)

    def on_after_backward(self, trainer: TrainerView) -> None:
        for name, mask in self.masks.items():
            w = trainer.model.get_submodule(name).weight
            if w.grad is not None:
                w.grad.mul_(mask.to(w.grad.dtype))

    def on_batch_end(self, trainer: TrainerView, batch, loss: float) -> None:
        apply_masks_(trainer.model, self.masks)

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {k: v.to(torch.uint8) for k, v in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = {k: v.bool() for k, v in state.get("masks", {}).items()}


def cubic_sparsity(step: int, *, final: float, start: int, end: int, initial: float = 0.0) -> float:
    """Sparsity at ``step`` on the schedule of Zhu & Gupta 2017 (eq. 1):
    ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3``, flat before ``start`` and after ``end``.

    Example:
        >>> [round(cubic_sparsity(t, final=0.9, start=0, end=10), 3) for t in (0, 5, 10, 20)]
        [0.0, 0.787, 0.9, 0.9]
    """
    if step <= start:
        return initial
    if step >= end:
        return final
    frac = (step - start) / (end - start)
    return final + (initial - final) * (1.0 - frac) ** 3


class GradualMagnitudePruning(KeepSparsity):
    """Raises sparsity from ``initial`` to ``config.ratio`` during training on the cubic schedule, re-ranking
    weights by magnitude every ``every`` steps and keeping the masks in between.

    Args:
        config: the target (:class:`MagnitudePruneConfig`).
        start_fraction, end_fraction: where the ramp starts and ends, as fractions of all training steps.
        every: steps between mask updates.
        initial: sparsity at the start of the ramp.

    Example:
        >>> GradualMagnitudePruning(MagnitudePruneConfig(ratio=0.8), every=10).every
        10
    """

    def __init__(
        self,
        config: MagnitudePruneConfig,
        *,
        start_fraction: float = 0.0,
        end_fraction: float = 0.75,
        every: int = 50,
        initial: float = 0.0,
    ) -> None:
        super().__init__()
        check_range("start_fraction", start_fraction, 0.0, 1.0)
        check_range("end_fraction", end_fraction, start_fraction, 1.0)
        if every < 1:
            raise ConfigError(f"every must be >= 1 step, got {every}")
        self.config, self.start_fraction, self.end_fraction = config, start_fraction, end_fraction
        self.every, self.initial = every, initial
        self.current = initial

    def on_fit_start(self, trainer: TrainerView) -> None:
        if not self.masks:
            weights = prunable_weights(trainer.model, self.config.ignore)
            self.masks = {k: torch.ones_like(w, dtype=torch.bool) for k, w in weights.items()}
            self._update(trainer)

    def _update(self, trainer: TrainerView) -> None:
        total = max(trainer.total_steps, 1)
        target = cubic_sparsity(
            trainer.step,
            final=self.config.ratio,
            start=round(self.start_fraction * total),
            end=round(self.end_fraction * total),
            initial=self.initial,
        )
        if target > 0:
            self.masks = magnitude_masks(trainer.model, self.config.replace(ratio=target))
            apply_masks_(trainer.model, self.masks)
        self.current = target

    def on_batch_end(self, trainer: TrainerView, batch, loss: float) -> None:
        if trainer.step % self.every == 0:
            self._update(trainer)
        else:
            apply_masks_(trainer.model, self.masks)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "current": self.current}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.current = state.get("current", self.initial)
