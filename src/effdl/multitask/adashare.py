"""AdaShare (Sun, Panda, Feris, Saenko, "AdaShare: Learning What To Share For Efficient Deep Multi-Task Learning",
NeurIPS 2020): every task learns, per residual block of one shared backbone, whether to execute or skip it.

Three stages, each a run of the one training loop (resumable): warm-up with every block executed (hard sharing);
policy learning, where each task's select/skip logits are sampled with straight-through Gumbel-softmax (temperature
annealed), a curriculum learns the last blocks' policies first, and the loss adds a sparsity term (toward skipping,
weighted up with depth) and a sharing term (L1 distance between tasks' select probabilities, weighted up toward the
first blocks); then the policy is fixed (select where its probability is at least 1/2) and the network retrained
from scratch with it. Weights and policy are updated together at every step (the paper alternates them)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from effdl.core.callback import Callback
from effdl.core.config import Config, check_range
from effdl.core.errors import ConfigError
from effdl.multitask.model import MultiTaskNet
from effdl.multitask.tasks import TaskSpec
from effdl.multitask.training import MultiTaskConfig, train_multitask

__all__ = [
    "AdaShareConfig",
    "AdaSharePolicy",
    "AdaShareResult",
    "sharing_by_depth",
    "sharing_loss",
    "sparsity_loss",
    "train_adashare",
]

log = logging.getLogger(__name__)


def sparsity_loss(logits: torch.Tensor, learn_from: int = 0) -> torch.Tensor:
    """Pushes toward skipping: the mean over tasks and learned blocks of ``-log p(skip)``, block ``l`` (of ``L``)
    weighted by ``(l + 1) / L`` so that late blocks are skipped first. ``logits``: ``(tasks, blocks, 2)``.

    Example:
        >>> round(float(sparsity_loss(torch.zeros(2, 3, 2))), 4)  # p(skip) = 1/2 everywhere: log 2 * mean(1/3, 2/3, 1)
        0.4621
    """
    blocks = logits.shape[1]
    weight = torch.arange(1, blocks + 1, dtype=logits.dtype) / blocks
    nll = -F.log_softmax(logits, dim=-1)[..., 1]  # (tasks, blocks)
    return (nll * weight)[:, learn_from:].mean()


def sharing_loss(logits: torch.Tensor) -> torch.Tensor:
    """Pushes tasks to share: the mean over task pairs of ``sum_l (L - l) / L * |p_i(select_l) - p_j(select_l)|``
    (early blocks weigh most). Zero for identical policies. ``logits``: ``(tasks, blocks, 2)``.

    Example:
        >>> float(sharing_loss(torch.zeros(3, 4, 2)))
        0.0
    """
    tasks, blocks = logits.shape[:2]
    if tasks < 2:
        return logits.sum() * 0.0
    p = logits.softmax(dim=-1)[..., 0]  # (tasks, blocks)
    weight = (blocks - torch.arange(blocks, dtype=logits.dtype)) / blocks
    i, j = torch.triu_indices(tasks, tasks, offset=1)
    return ((p[i] - p[j]).abs() * weight).sum(dim=1).mean()


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdaShareConfig(Config):
    """AdaShare's stages and policy loss.

    Attributes:
        warmup_epochs: hard-sharing epochs before the policy is learned.
        policy_epochs: epochs of joint weight and policy learning.
        retrain_epochs: epochs of training from scratch with the fixed policy.
        policy_lr: Adam learning rate of the policy logits.
        temperature, temperature_decay: Gumbel-softmax temperature at the first policy epoch and its factor per epoch.
        sparsity, sharing: weights of :func:`sparsity_loss` and :func:`sharing_loss`.
        curriculum: learn the last block's policy in the first policy epoch, one more block each epoch after.
        init_select: initial probability of executing each block.

    Example:
        >>> AdaShareConfig(sparsity=0.0).sharing
        0.05
    """

    warmup_epochs: int = 5
    policy_epochs: int = 15
    retrain_epochs: int = 20
    policy_lr: float = 0.01
    temperature: float = 5.0
    temperature_decay: float = 0.9
    sparsity: float = 0.05
    sharing: float = 0.05
    curriculum: bool = True
    init_select: float = 0.5

    def validate(self) -> None:
        """Checks every field."""
        check_range("warmup_epochs", self.warmup_epochs, 0, hint="use warmup_epochs=5")
        check_range("policy_epochs", self.policy_epochs, 1, hint="use policy_epochs=15")
        check_range("retrain_epochs", self.retrain_epochs, 1, hint="use retrain_epochs=20")
        check_range("policy_lr", self.policy_lr, 0.0, low_open=True, hint="use policy_lr=0.01")
        check_range("temperature", self.temperature, 0.0, low_open=True, hint="use temperature=5.0")
        check_range("temperature_decay", self.temperature_decay, 0.0, 1.0, low_open=True, hint="use 0.9")
        check_range("sparsity", self.sparsity, 0.0, hint="use sparsity=0.05")
        check_range("sharing", self.sharing, 0.0, hint="use sharing=0.05")
        check_range("init_select", self.init_select, 0.0, 1.0, low_open=True, high_open=True, hint="use 0.5")


class AdaSharePolicy(Callback):
    """The policy-learning stage as a training-loop callback: turns the network's Gumbel sampling on, anneals the
    temperature and moves the curriculum each epoch, adds the sparsity and sharing terms to the loss, and steps the
    policy logits with their own Adam after each backward pass (the loop's optimizer holds the weights only)."""

    def __init__(self, config: AdaShareConfig) -> None:
        self.config = config
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending: dict[str, Any] | None = None

    def on_fit_start(self, trainer) -> None:
        """Starts sampling; the logits get gradients and an optimizer."""
        net: MultiTaskNet = trainer.model
        net.policy_logits.requires_grad_(True)
        net.sampling = True
        self.optimizer = torch.optim.Adam([net.policy_logits], lr=self.config.policy_lr)
        if self._pending is not None:
            state = self._pending
            self.optimizer.load_state_dict({"state": {int(k): v for k, v in state["state"].items()},
                                            "param_groups": state["param_groups"]})  # fmt: skip
            self._pending = None

    def on_epoch_start(self, trainer, epoch: int) -> None:
        """Temperature and curriculum of this epoch."""
        net: MultiTaskNet = trainer.model
        net.temperature = self.config.temperature * self.config.temperature_decay**epoch
        net.learn_from = max(0, net.num_blocks - (epoch + 1)) if self.config.curriculum else 0

    def on_loss(self, trainer, batch, outputs, loss):
        """Adds the policy terms."""
        net: MultiTaskNet = trainer.model
        return (loss + self.config.sparsity * sparsity_loss(net.policy_logits, net.learn_from)
                + self.config.sharing * sharing_loss(net.policy_logits))  # fmt: skip

    def on_after_backward(self, trainer) -> None:
        """Steps the policy."""
        assert self.optimizer is not None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def on_fit_end(self, trainer) -> None:
        """Stops sampling."""
        net: MultiTaskNet = trainer.model
        net.sampling = False
        net.policy_logits.requires_grad_(False)

    def state_dict(self) -> dict[str, Any]:
        """The policy optimizer's state."""
        if self.optimizer is None:
            return {}
        state = self.optimizer.state_dict()
        return {"state": {str(k): v for k, v in state["state"].items()}, "param_groups": state["param_groups"]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores it when the stage starts."""
        self._pending = state or None


def sharing_by_depth(gates: torch.Tensor | Sequence[Sequence[int]]) -> list[float]:
    """Per block, the share of task pairs that both execute it (1: every task shares the block); ``gates``:
    ``(tasks, blocks)`` of 0/1.

    Example:
        >>> [round(s, 4) for s in sharing_by_depth([[1, 1, 0], [1, 0, 0], [1, 1, 1]])]
        [1.0, 0.3333, 0.0]
    """
    gates = torch.as_tensor(gates, dtype=torch.float32)
    tasks = gates.shape[0]
    if tasks < 2:
        return [1.0] * gates.shape[1]
    i, j = torch.triu_indices(tasks, tasks, offset=1)
    return [float(((gates[i, b] == 1) & (gates[j, b] == 1)).float().mean()) for b in range(gates.shape[1])]


@dataclasses.dataclass
class AdaShareResult:
    """What :func:`train_adashare` returns: the retrained network (with its fixed policy) and the policy's
    select probabilities ``(tasks, blocks)``."""

    model: MultiTaskNet
    select_probabilities: torch.Tensor

    @property
    def policy(self) -> torch.Tensor:
        """``(tasks, blocks)`` 0/1: the blocks each task executes."""
        return self.model.gates.clone()

    def sharing_by_depth(self) -> list[float]:
        """Per block, the share of task pairs that both execute it (see :func:`sharing_by_depth`)."""
        return sharing_by_depth(self.policy)

    def table(self) -> list[list[str]]:
        """Rows ``task, block decisions (x executed, . skipped)``."""
        return [[name, " ".join("x" if g else "." for g in row.tolist())]
                for name, row in zip(self.model.task_names, self.policy, strict=True)]  # fmt: skip


def train_adashare(
    specs: Mapping[str, TaskSpec],
    data: Dataset,
    config: AdaShareConfig | None = None,
    train: MultiTaskConfig | None = None,
    *,
    widths: Sequence[int] = (16, 16, 32, 32, 32, 32),
    strides: Sequence[int] | None = None,
    callbacks: Sequence[Callback] = (),
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = False,
) -> AdaShareResult:
    """Runs AdaShare's three stages (see the module's description) on ``(image, {task: target})`` items. With
    ``out_dir`` each stage checkpoints in its own folder (``warmup``, ``policy``, ``retrain``) and ``resume=True``
    continues a killed run where it stopped, exactly. ``callbacks`` join the loop in every stage.

    Example:
        >>> from effdl.data import load_scenes
        >>> from effdl.multitask.tasks import scene_task_specs
        >>> s = load_scenes(train=8, val=2, test=2, size=16)
        >>> cfg = AdaShareConfig(warmup_epochs=1, policy_epochs=1, retrain_epochs=1)
        >>> r = train_adashare(scene_task_specs(), s.train.dataset(), cfg, MultiTaskConfig(batch_size=8), widths=(8, 8))
        >>> r.policy.shape
        torch.Size([5, 2])
    """
    config = config or AdaShareConfig()
    train = train or MultiTaskConfig()
    if len(specs) < 2:
        raise ConfigError("AdaShare learns what tasks share: give it at least two tasks")
    folder = Path(out_dir) if out_dir is not None else None

    def stage(name: str) -> Path | None:
        return folder / name if folder is not None else None

    torch.manual_seed(train.seed)
    net = MultiTaskNet(specs, widths=widths, strides=strides)
    p = config.init_select
    with torch.no_grad():
        net.policy_logits[..., 0] = torch.log(torch.tensor(p / (1 - p)))
    if config.warmup_epochs:
        train_multitask(net, data, train, callbacks=callbacks, epochs=config.warmup_epochs, out_dir=stage("warmup"),
                        resume=resume, progress=progress)  # fmt: skip
    train_multitask(net, data, train, callbacks=[AdaSharePolicy(config), *callbacks], epochs=config.policy_epochs,
                    out_dir=stage("policy"), resume=resume, progress=progress)  # fmt: skip
    probs = net.select_probabilities().detach().clone()
    gates = (probs >= 0.5).float()
    log.info("AdaShare policy (select probabilities):\n%s", probs)
    torch.manual_seed(train.seed + 1)
    final = MultiTaskNet(specs, widths=widths, strides=strides)
    final.set_policy(gates)
    with torch.no_grad():
        final.policy_logits.copy_(net.policy_logits)
    train_multitask(final, data, train, callbacks=callbacks, epochs=config.retrain_epochs, out_dir=stage("retrain"),
                    resume=resume, progress=progress)  # fmt: skip
    return AdaShareResult(final, probs)
