"""Training and evaluating multi-task networks in the one training loop: the summed task losses (each over the
examples labelled for that task), per-task metrics, and the multi-task gain against single-task models."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from effdl.core.callback import Callback
from effdl.core.config import Config, check_range
from effdl.multitask.model import MultiTaskNet
from effdl.multitask.tasks import TaskSpec
from effdl.train import TrainConfig, Trainer

__all__ = ["MASK_KEY", "MultiTaskConfig", "MultiTaskLoss", "delta_mtl", "evaluate_multitask", "train_multitask"]

#: key of the optional ``(tasks,)`` bool tensor in a target dict: which tasks this example has labels for
MASK_KEY = "_labelled"


class MultiTaskLoss:
    """``sum_t weight_t * loss_t``, each task's loss averaged over the examples labelled for it (the target dict's
    ``MASK_KEY`` entry, ``(B, tasks)`` in ``task_names`` order; all labelled without it).

    Example:
        >>> loss = MultiTaskLoss({"n": TaskSpec("label", 2)})
        >>> float(loss({"n": torch.zeros(2, 2)}, {"n": torch.tensor([0, 1])}))  # log 2
        0.6931471824645996
    """

    def __init__(self, specs: Mapping[str, TaskSpec], weights: Mapping[str, float] | None = None) -> None:
        self.specs = dict(specs)
        self.names = tuple(specs)
        self.weights = {t: float((weights or {}).get(t, 1.0)) for t in self.names}

    def __call__(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = targets.get(MASK_KEY)
        total = torch.zeros(())
        for i, (name, spec) in enumerate(self.specs.items()):
            if name in outputs:
                m = mask[:, i] if mask is not None else None
                total = total + self.weights[name] * spec.loss(outputs[name], targets[name], m)
        return total


@dataclasses.dataclass(frozen=True, kw_only=True)
class MultiTaskConfig(Config):
    """Training of a multi-task (or single-task) network.

    Attributes:
        epochs, batch_size: passes over the training images and images per step.
        lr: Adam learning rate (cosine to zero); weight_decay: Adam's L2.
        loss_weights: ``((task, weight), ...)``; unnamed tasks weigh 1.
        checkpoint_every: with an output folder, save a resumable checkpoint every this many steps (0: each epoch).
        seed: seeds the weights and the batches.

    Example:
        >>> MultiTaskConfig(epochs=3).batch_size
        64
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    loss_weights: tuple[tuple[str, float], ...] = ()
    checkpoint_every: int = 0
    seed: int = 0

    def validate(self) -> None:
        """Checks every field."""
        check_range("epochs", self.epochs, 1, hint="use epochs=20")
        check_range("batch_size", self.batch_size, 1, hint="use batch_size=64")
        check_range("lr", self.lr, 0.0, low_open=True, hint="use lr=2e-3")
        check_range("weight_decay", self.weight_decay, 0.0, hint="use weight_decay=1e-4")
        check_range("checkpoint_every", self.checkpoint_every, 0, hint="use checkpoint_every=0 (each epoch)")

    def train_config(self, progress: bool = False, epochs: int | None = None) -> TrainConfig:
        """The loop's settings."""
        return TrainConfig(epochs=epochs or self.epochs, batch_size=self.batch_size, optimizer="adam", lr=self.lr,
                           weight_decay=self.weight_decay, schedule="cosine", seed=self.seed, progress=progress,
                           checkpoint_every_steps=self.checkpoint_every)  # fmt: skip


def train_multitask(
    model: MultiTaskNet,
    data: Dataset,
    config: MultiTaskConfig | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    epochs: int | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = False,
) -> MultiTaskNet:
    """Trains ``model`` (in place) on ``(image, {task: target})`` items with the summed task losses in the one
    training loop (``callbacks``, checkpoints in ``out_dir``, ``resume=True`` continues a killed run exactly);
    ``epochs`` overrides the config's. Returns the model in eval mode.

    Example:
        >>> from effdl.data import load_scenes
        >>> from effdl.multitask.tasks import scene_task_specs
        >>> s = load_scenes(train=16, val=2, test=2, size=16)
        >>> net = MultiTaskNet(scene_task_specs(), widths=(8, 8), strides=(1, 2))
        >>> train_multitask(net, s.train.dataset(), MultiTaskConfig(epochs=1, batch_size=8)).training
        False
    """
    config = config or MultiTaskConfig()
    loss = MultiTaskLoss(model.specs, dict(config.loss_weights))
    trainer = Trainer(model, config.train_config(progress, epochs), callbacks=callbacks, out_dir=out_dir, loss_fn=loss)
    trainer.fit(data, resume=resume)
    return model.eval()


@torch.no_grad()
def evaluate_multitask(model: nn.Module, data: Dataset, specs: Mapping[str, TaskSpec] | None = None, *,
                       batch_size: int = 256) -> dict[str, float]:  # fmt: skip
    """Each task's metric (see :class:`TaskSpec`) of ``model`` on ``data``, in eval mode.

    Example:
        >>> from effdl.data import load_scenes
        >>> from effdl.multitask.tasks import scene_task_specs
        >>> net = MultiTaskNet(scene_task_specs(), widths=(8,), strides=(1,))
        >>> sorted(evaluate_multitask(net, load_scenes(train=2, val=2, test=4, size=16).test.dataset()))
        ['count', 'depth', 'edge', 'normal', 'segment']
    """
    specs = dict(specs or model.specs)  # type: ignore[union-attr]
    was = model.training
    model.eval()
    states: dict[str, torch.Tensor] = {}
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    for x, y in loader:
        out = model(x)
        for name, spec in specs.items():
            s = spec.metric_state(out[name], y[name])
            states[name] = states[name] + s if name in states else s
    model.train(was)
    return {name: spec.metric(states[name]) for name, spec in specs.items()}


def delta_mtl(metrics: Mapping[str, float], baseline: Mapping[str, float], specs: Mapping[str, TaskSpec]) -> float:
    """The multi-task gain in percent (Maninis et al. 2019, as AdaShare reports it): the mean over tasks of the
    relative change of each metric against ``baseline`` (single-task models), its sign flipped where lower is better.

    Example:
        >>> specs = {"a": TaskSpec("label", 2), "b": TaskSpec("regress", 1)}
        >>> round(delta_mtl({"a": 0.9, "b": 0.2}, {"a": 0.8, "b": 0.25}, specs), 6)  # (+12.5% + 20%) / 2
        16.25
    """
    gains = []
    for name, spec in specs.items():
        change = (metrics[name] - baseline[name]) / abs(baseline[name]) if baseline[name] else math.nan
        gains.append(100 * (change if spec.higher_is_better else -change))
    return float(sum(gains) / len(gains))
