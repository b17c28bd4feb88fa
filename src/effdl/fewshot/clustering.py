"""Feature clustering (Goldblum et al., "Unraveling Meta-Learning", ICML 2020): meta-learned features cluster
tighter by class than classically trained ones; a clustering regularizer added to classical training closes part of
the few-shot gap. Here: the ratio of within-class to between-class feature variance, a classically trained
backbone (cross-entropy over all training classes), and the regularizer as a training-loop callback."""

from __future__ import annotations

import dataclasses
import os

import torch
from torch import nn
from torch.utils.data import Dataset

from effdl.core.callback import Callback
from effdl.core.config import Config, check_range
from effdl.data.episodes import EpisodeSampler
from effdl.fewshot.learner import MetaLearner, conv4, fit_one_pass

__all__ = ["ClassicalConfig", "ClusteringRegularizer", "clustering_ratio", "embed", "train_classical"]


def clustering_ratio(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Within-class over between-class variance of ``features`` ``(n, D)``: the mean squared distance of a feature
    to its class mean, divided by the mean squared distance of the class means to their mean (R_FC of Goldblum et
    al. 2020, up to a constant factor); lower is tighter. Differentiable.

    Example:
        >>> f = torch.tensor([[0.0], [0.2], [4.0], [4.2]])
        >>> round(float(clustering_ratio(f, torch.tensor([0, 0, 1, 1]))), 4)
        0.0025
    """
    classes, inverse = torch.unique(labels, return_inverse=True)
    counts = torch.bincount(inverse, minlength=len(classes)).to(features)
    means = torch.zeros(len(classes), features.shape[1], dtype=features.dtype, device=features.device)
    means.index_add_(0, inverse, features)
    means = means / counts[:, None]
    within = (features - means[inverse]).pow(2).sum(dim=1).mean()
    between = (means - means.mean(dim=0)).pow(2).sum(dim=1).mean()
    return within / between.clamp_min(1e-12)


@torch.no_grad()
def embed(backbone: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``backbone`` features of ``images`` in eval mode, ``(n, D)``."""
    was = backbone.training
    backbone.eval()
    out = torch.cat([backbone(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    backbone.train(was)
    return out


class _ClassBatches(Dataset):
    """Item ``i``: ``classes x per_class`` examples (class by class) and their dataset labels; a batch of items
    is ``(B, M, C, H, W)`` and ``(B, M)``. Balanced batches give the regularizer several examples of each class."""

    def __init__(self, images, labels, *, classes: int, per_class: int, length: int, seed: int) -> None:
        self.images, self.labels, self.length = images, labels, length
        self.sampler = EpisodeSampler(labels, n_way=classes, k_shot=per_class - 1, n_query=1, seed=seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        e = self.sampler.episode(index)
        idx = torch.tensor(e.support + e.query)
        return self.images[idx], self.labels[idx]


class _Classifier(nn.Module):
    """A backbone and a linear layer over all training classes; takes ``(B, M, C, H, W)`` class batches and returns
    ``(B, classes, M)`` logits (classes on dim 1, for cross-entropy and the loop's accuracy)."""

    def __init__(self, backbone: nn.Module, num_classes: int, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m = x.shape[:2]
        return self.fc(self.backbone(x.reshape(b * m, *x.shape[2:]))).reshape(b, m, -1).transpose(1, 2)


class ClusteringRegularizer(Callback):
    """Adds ``weight * clustering_ratio(features, labels)`` of each batch to the loss (Goldblum et al. 2020's
    feature-clustering regularizer); the features are the output of ``model.backbone``, caught by a forward hook.

    Example:
        >>> ClusteringRegularizer(weight=0.5).weight
        0.5
    """

    def __init__(self, weight: float) -> None:
        check_range("weight", weight, 0.0, hint="use weight=1.0")
        self.weight = weight
        self._features: torch.Tensor | None = None
        self._hook = None

    def on_fit_start(self, trainer) -> None:
        """Hooks the backbone."""
        self._hook = trainer.model.backbone.register_forward_hook(self._catch)

    def _catch(self, module, inputs, output) -> None:
        self._features = output

    def on_loss(self, trainer, batch, outputs, loss):
        """The loss plus the weighted clustering ratio of this batch's features."""
        if self.weight == 0 or self._features is None:
            return loss
        return loss + self.weight * clustering_ratio(self._features, batch[1].reshape(-1))

    def on_fit_end(self, trainer) -> None:
        """Removes the hook."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassicalConfig(Config):
    """Classical (non-episodic) training of a few-shot backbone.

    Attributes:
        steps: optimizer steps.
        classes, per_class: a batch holds this many classes with this many examples each.
        lr: Adam learning rate (cosine).
        cluster_weight: weight of the feature-clustering regularizer (0: plain cross-entropy).
        seed: seeds the weights and the batches.

    Example:
        >>> ClassicalConfig(cluster_weight=1.0).per_class
        4
    """

    steps: int = 2000
    classes: int = 32
    per_class: int = 4
    lr: float = 1e-3
    cluster_weight: float = 0.0
    seed: int = 0

    def validate(self) -> None:
        """Checks every field."""
        check_range("steps", self.steps, 1, hint="use steps=2000")
        check_range("classes", self.classes, 2, hint="use classes=32")
        check_range("per_class", self.per_class, 2, hint="use per_class=4")
        check_range("lr", self.lr, 0.0, low_open=True, hint="use lr=1e-3")
        check_range("cluster_weight", self.cluster_weight, 0.0, hint="use cluster_weight=0 (off) or 1.0")


def train_classical(
    images: torch.Tensor,
    labels: torch.Tensor,
    config: ClassicalConfig | None = None,
    *,
    backbone: nn.Module | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = False,
) -> MetaLearner:
    """Trains a backbone with cross-entropy over all classes of ``labels`` (plus the clustering regularizer when
    ``config.cluster_weight > 0``) and returns it inside a ProtoNet :class:`MetaLearner`, for few-shot evaluation.

    Example:
        >>> x, y = torch.randn(40, 1, 28, 28), torch.arange(10).repeat_interleave(4)
        >>> train_classical(x, y, ClassicalConfig(steps=2, classes=3, per_class=2)).head.__class__.__name__
        '_ProtoHead'
    """
    config = config or ClassicalConfig()
    torch.manual_seed(config.seed)
    backbone = backbone if backbone is not None else conv4(images.shape[1])
    dim = embed(backbone, images[:2]).shape[1]
    model = _Classifier(backbone, int(labels.max()) + 1, dim)
    data = _ClassBatches(images, labels, classes=config.classes, per_class=config.per_class, length=config.steps,
                         seed=config.seed)  # fmt: skip
    callbacks = [ClusteringRegularizer(config.cluster_weight)] if config.cluster_weight > 0 else []
    fit_one_pass(model, data, 1, (config.lr, config.seed, 100), callbacks=callbacks, out_dir=out_dir, resume=resume,
                 progress=progress)  # fmt: skip
    return MetaLearner(model.backbone, "proto").eval()
