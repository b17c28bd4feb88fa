"""Lottery tickets: iterative magnitude pruning (IMP) with weight rewinding (Frankle & Carbin, ICLR 2019; rewinding
to an early iteration as in Frankle et al., ICML 2020), and early-bird ticket detection (You et al., ICLR 2020)."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from effdl.core.callback import Callback, TrainerView
from effdl.core.config import Config, check_choice, check_range, rename_fields
from effdl.core.errors import ConfigError
from effdl.prune.graph import build_dependency_graph
from effdl.prune.structured import StructuredPruneConfig, compute_scores, select_channels
from effdl.prune.unstructured import MagnitudePruneConfig

__all__ = ["EarlyBird", "LotteryResult", "LotteryTicketConfig", "RewindPoint", "reinitialize_"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LotteryTicketConfig(Config):
    """Iterative magnitude pruning with rewinding.

    Attributes:
        rounds: prune-and-retrain rounds after the dense run.
        ratio: fraction of the *remaining* weights pruned per round (sparsity after r rounds: 1 - (1 - ratio)^r).
        rewind_step: training step whose weights the survivors are reset to (0: the initialization, as in
            Frankle & Carbin; a few hundred steps: "rewinding", Frankle et al. 2020).
        scope: ``"global"`` or ``"layer"`` magnitude ranking.
        ignore: module names or regexes kept dense.

    Example:
        >>> round(LotteryTicketConfig(rounds=4, ratio=0.4).final_sparsity, 4)
        0.8704
    """

    rounds: int = 4
    config_version = 2  # version 1 called the ratio "rate"
    ratio: float = 0.4
    rewind_step: int = 0
    scope: str = "global"
    ignore: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        check_range("ratio", self.ratio, 0.0, 1.0, low_open=True, high_open=True, hint="use ratio=0.2 (20% per round)")
        if self.rewind_step < 0:
            raise ConfigError(f"rewind_step must be >= 0, got {self.rewind_step}")
        check_choice("scope", self.scope, ("global", "layer"))

    @property
    def final_sparsity(self) -> float:
        """Sparsity after the last round."""
        return 1.0 - (1.0 - self.ratio) ** self.rounds

    def round_config(self, r: int) -> MagnitudePruneConfig:
        """The magnitude pruning of round ``r``: sparsity ``1 - (1 - ratio)^r``, this config's scope and ignore.

        Example:
            >>> LotteryTicketConfig(ratio=0.5, scope="layer").round_config(2)
            MagnitudePruneConfig(ratio=0.75, scope='layer', per_layer={}, ignore=(), n_m=None)
        """
        return MagnitudePruneConfig(ratio=1.0 - (1.0 - self.ratio) ** r, scope=self.scope, ignore=self.ignore)

    @classmethod
    def upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        return rename_fields(cls, data, {"rate": "ratio"})


class RewindPoint(Callback):
    """Keeps a copy of the model's weights after ``step`` training steps (at the start when 0).

    Example:
        >>> RewindPoint(0).state is None
        True
    """

    def __init__(self, step: int) -> None:
        self.step = step
        self.state: dict[str, torch.Tensor] | None = None

    def _take(self, model: nn.Module) -> None:
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def on_fit_start(self, trainer: TrainerView) -> None:
        if self.step == 0 and self.state is None:
            self._take(trainer.model)

    def on_batch_end(self, trainer: TrainerView, batch, loss: float) -> None:
        if self.state is None and trainer.step + 1 == self.step:
            self._take(trainer.model)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.state or {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = dict(state["weights"]) if state.get("weights") else None


def reinitialize_(model: nn.Module, seed: int) -> None:
    """Draws fresh initial weights (every module's ``reset_parameters``) from ``seed``: the random-reinitialization
    control of the lottery-ticket experiments."""
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        for m in model.modules():
            if hasattr(m, "reset_parameters") and m is not model:
                m.reset_parameters()
    finally:
        torch.set_rng_state(gen_state)


@dataclasses.dataclass
class LotteryResult:
    """Per round: sparsity and test accuracy; the final masks; and the trained ticket (the model passed in)."""

    rounds: list[dict[str, float]]
    masks: dict[str, torch.Tensor]
    rewind_state: dict[str, torch.Tensor]

    def to_table(self) -> str:
        """Rounds as a text table."""
        from effdl.core.table import format_table

        rows = [[r["round"], f"{100 * r['sparsity']:.1f}%", f"{100 * r['accuracy']:.2f}%"] for r in self.rounds]
        return format_table(rows, ["round", "sparsity", "test accuracy"], align="rrr")


class EarlyBird(Callback):
    """Detects an early-bird ticket (You et al., "Drawing Early-Bird Tickets", ICLR 2020): after every epoch the
    structured mask that pruning ``ratio`` of the channels would take (BN scaling factors, ranked globally) is
    compared with the previous epoch's; when the normalized Hamming distance stays under ``threshold`` for
    ``window`` consecutive epochs the ticket has emerged, and training stops (``stop=True``) so that the model can
    be pruned with that mask and fine-tuned.

    Args:
        example_inputs: a batch, to trace the model.
        ratio: pruning ratio of the mask.
        threshold: distance under which masks count as settled (paper: 0.1).
        window: consecutive epochs that must be under ``threshold`` (paper: 5).
        criterion: importance criterion of the mask.
        stop: end training when found.

    Example:
        >>> EarlyBird(torch.zeros(1, 1, 40), ratio=0.5).found_epoch is None
        True
    """

    def __init__(
        self,
        example_inputs: Any,
        *,
        ratio: float = 0.5,
        threshold: float = 0.1,
        window: int = 5,
        criterion: str = "bn_scale",
        stop: bool = True,
        ignore: Sequence[str] = (),
    ) -> None:
        self.example_inputs = example_inputs
        self.config = StructuredPruneConfig(criterion=criterion, ratio=ratio, scope="global", ignore=tuple(ignore))
        self.threshold, self.window, self.stop = threshold, window, stop
        self.distances: list[float] = []
        self.previous: torch.Tensor | None = None
        self.found_epoch: int | None = None
        self._graph = None

    def mask(self, model: nn.Module) -> torch.Tensor:
        """The current keep-mask over all prunable channels, concatenated in group order."""
        if self._graph is None:
            self._graph = build_dependency_graph(copy.deepcopy(model), self.example_inputs, ignore=self.config.ignore)
        scores = compute_scores(model, self._graph, self.config)
        chosen = select_channels(self._graph, scores, self.config)
        parts = []
        for g in self._graph.groups:
            keep = torch.ones(len(g), dtype=torch.bool)
            removed = {ch.id for ch in chosen.get(g.name, (g, []))[1]}
            keep[[i for i, ch in enumerate(g.channels) if ch.id in removed]] = False
            parts.append(keep)
        return torch.cat(parts) if parts else torch.ones(0, dtype=torch.bool)

    def on_fit_start(self, trainer: TrainerView) -> None:
        if self.found_epoch is not None and self.stop:
            trainer.should_stop = True

    def on_epoch_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, float]) -> None:
        if self.found_epoch is not None:
            return
        current = self.mask(trainer.model)
        if self.previous is not None:
            self.distances.append(float((current != self.previous).float().mean()))
        self.previous = current
        recent = self.distances[-self.window :]
        if len(recent) == self.window and max(recent) < self.threshold:
            self.found_epoch = epoch
            log.info("early-bird ticket found at epoch %d (mask distances %s)", epoch, [round(d, 3) for d in recent])
            if self.stop:
                trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {
            "distances": self.distances,
            "previous": self.previous.to(torch.uint8) if self.previous is not None else None,
            "found_epoch": self.found_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.distances = list(state.get("distances", []))
        prev = state.get("previous")
        self.previous = prev.bool() if isinstance(prev, torch.Tensor) else None
        self.found_epoch = state.get("found_epoch")
