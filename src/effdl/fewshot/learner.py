"""Metric, closed-form and optimization-based meta-learners: a backbone embeds support and query images, a head
turns the support embeddings into a classifier of the queries. ProtoNet (Snell et al., NeurIPS 2017), R2-D2
(Bertinetto et al., ICLR 2019) and ANIL (Raghu et al., ICLR 2020: MAML's inner loop on the head) heads; the Conv-4
backbone of these papers; episodic training in the one training loop (resumable) and evaluation over many test
episodes with 95% confidence intervals."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from effdl.core.checkpoint import load_checkpoint, save_checkpoint
from effdl.core.config import Config, check_range
from effdl.core.errors import CheckpointError
from effdl.core.registry import Registry
from effdl.data.episodes import EpisodeDataset, EpisodeSampler
from effdl.fewshot.augment import AugmentConfig, AugmentedEpisodes, maxup_loss
from effdl.train import Callback, TrainConfig, Trainer

__all__ = [
    "HEADS",
    "ANILHead",
    "EpisodeScore",
    "FewShotConfig",
    "MetaLearner",
    "R2D2Head",
    "conv4",
    "evaluate_episodes",
    "load_meta_learner",
    "prototype_logits",
    "save_meta_learner",
    "train_meta_learner",
]

log = logging.getLogger(__name__)


def conv4(in_channels: int = 1, hidden: int = 64) -> nn.Sequential:
    """The Conv-4 backbone of few-shot learning: 4 x (3x3 conv, BatchNorm, ReLU, 2x2 max-pool), flattened
    (64 features for 28x28 inputs).

    Example:
        >>> conv4()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 64])
    """
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(in_channels if i == 0 else hidden, hidden, 3, padding=1), nn.BatchNorm2d(hidden),
                   nn.ReLU(), nn.MaxPool2d(2)]  # fmt: skip
    return nn.Sequential(*layers, nn.Flatten())


def prototype_logits(support: torch.Tensor, query: torch.Tensor, n_way: int) -> torch.Tensor:
    """ProtoNet: negative squared Euclidean distance of each query to each class mean (Snell et al. 2017, eq. 1-2).

    Args:
        support: ``(N*K, D)`` embeddings, class by class.
        query: ``(Q, D)`` embeddings.

    Returns:
        ``(Q, N)`` logits.

    Example:
        >>> prototype_logits(torch.tensor([[0.0], [2.0]]), torch.tensor([[0.5]]), 2)
        tensor([[-0.2500, -2.2500]])
    """
    prototypes = support.reshape(n_way, -1, support.shape[-1]).mean(dim=1)  # (N, D)
    return -torch.cdist(query, prototypes).pow(2)


class _ProtoHead(nn.Module):
    def forward(self, support: torch.Tensor, query: torch.Tensor, n_way: int) -> torch.Tensor:
        return prototype_logits(support, query, n_way)


class R2D2Head(nn.Module):
    """R2-D2: ridge regression from support embeddings to one-hot labels, solved in closed form with the
    Woodbury identity ``W = X^T (X X^T + lambda I)^-1 Y`` (Bertinetto et al. 2019, eq. 5), then
    ``logits = alpha * query W + beta``; lambda, alpha and beta are learned (lambda through its logarithm)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_lambda = nn.Parameter(torch.tensor(0.0))
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.beta = nn.Parameter(torch.tensor(0.0))

    def forward(self, support: torch.Tensor, query: torch.Tensor, n_way: int) -> torch.Tensor:
        """``(N*K, D)`` support and ``(Q, D)`` query embeddings -> ``(Q, N)`` logits."""
        n = support.shape[0]
        y = F.one_hot(torch.arange(n_way, device=support.device).repeat_interleave(n // n_way), n_way).to(support)
        gram = support @ support.T + self.log_lambda.exp() * torch.eye(n, device=support.device)  # (NK, NK)
        w = support.T @ torch.linalg.solve(gram, y)  # (D, N)
        return self.alpha * (query @ w) + self.beta


class ANILHead(nn.Module):
    """ANIL (Raghu et al., "Rapid Learning or Feature Reuse?", ICLR 2020): MAML's inner loop on the last layer only.
    A linear classifier on the support embeddings, started at zero (the zeroing trick of Kao et al., ICLR 2022, so one
    head serves any number of ways), takes ``steps`` gradient steps on the support cross-entropy; the query logits
    come from the adapted classifier. The outer loop differentiates through the inner steps (second order: cheap on
    the head alone) unless ``first_order``; the inner step size is learned (through its logarithm).

    Example:
        >>> head = ANILHead(steps=3)
        >>> support, query = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.9, 0.1]])
        >>> head(support, query, 2).argmax(dim=1).tolist()
        [0]
    """

    def __init__(self, steps: int = 10, lr: float = 0.1, *, first_order: bool = False) -> None:
        super().__init__()
        check_range("steps", steps, 1, hint="use steps=10")
        check_range("lr", lr, 0.0, low_open=True, hint="use lr=0.1")
        self.register_buffer("steps", torch.tensor(steps))
        self.log_lr = nn.Parameter(torch.tensor(math.log(lr)))
        self.first_order = first_order

    def forward(self, support: torch.Tensor, query: torch.Tensor, n_way: int) -> torch.Tensor:
        """``(N*K, D)`` support and ``(Q, D)`` query embeddings -> ``(Q, N)`` logits of the adapted classifier."""
        outer = torch.is_grad_enabled()
        y = torch.arange(n_way, device=support.device).repeat_interleave(support.shape[0] // n_way)
        lr = self.log_lr.exp()
        with torch.enable_grad():
            w = support.new_zeros(n_way, support.shape[1], requires_grad=True)
            b = support.new_zeros(n_way, requires_grad=True)
            for _ in range(int(self.steps)):
                loss = F.cross_entropy(support @ w.T + b, y)
                gw, gb = torch.autograd.grad(loss, (w, b), create_graph=outer and not self.first_order)
                w, b = w - lr * gw, b - lr * gb
        if not outer:
            w, b = w.detach(), b.detach()
        return query @ w.T + b


HEADS: Registry[Any] = Registry("few-shot head")
HEADS.add("proto", _ProtoHead, description="prototypical networks: distance to class means (Snell et al. 2017)")
HEADS.add("r2d2", R2D2Head, description="closed-form ridge regression (Bertinetto et al. 2019)")
HEADS.add("anil", ANILHead, description="MAML's inner loop on a zero-initialised linear head (Raghu et al. 2020)")


class MetaLearner(nn.Module):
    """A backbone and a head. ``forward`` takes a batch of episodes laid out as :class:`EpisodeDataset` makes them
    (``(B, N(K+Q), C, H, W)``, support first) and returns query logits ``(B, N, NQ)`` (classes on dim 1, as
    cross-entropy and the training loop expect); :meth:`classify` takes one episode's parts directly.

    Args:
        backbone: images -> ``(n, D)`` embeddings (default :func:`conv4`).
        head: a name in ``HEADS`` or a module ``head(support, query, n_way) -> logits``.
        n_way, k_shot: the episode layout ``forward`` reads (:meth:`set_episode` changes it).

    Example:
        >>> m = MetaLearner(head="proto", n_way=2, k_shot=1)
        >>> m(torch.randn(3, 2 * (1 + 4), 1, 28, 28)).shape
        torch.Size([3, 2, 8])
    """

    def __init__(self, backbone: nn.Module | None = None, head: str | nn.Module = "proto", *, n_way: int = 5,
                 k_shot: int = 1) -> None:  # fmt: skip
        super().__init__()
        self.backbone = backbone if backbone is not None else conv4()
        self.head = HEADS.get(head, allow_callable=False)() if isinstance(head, str) else head
        self.set_episode(n_way, k_shot)

    def set_episode(self, n_way: int, k_shot: int) -> None:
        """Sets the episode layout ``forward`` reads."""
        check_range("n_way", n_way, 2, hint="use n_way=5")
        check_range("k_shot", k_shot, 1, hint="use k_shot=1")
        self.n_way, self.k_shot = n_way, k_shot

    def classify(self, support: torch.Tensor, query: torch.Tensor, n_way: int) -> torch.Tensor:
        """Logits ``(Q, N)`` of ``query`` images given ``support`` images ordered class by class."""
        feats = self.backbone(torch.cat([support, query]))
        return self.head(feats[: len(support)], feats[len(support) :], n_way)

    def forward(self, episodes: torch.Tensor) -> torch.Tensor:
        """``(B, N(K+Q), C, H, W)`` -> ``(B, N, NQ)``; with augmented versions (Meta-MaxUp)
        ``(B, m, N(K+Q), C, H, W)`` -> ``(B, N, m, NQ)``: classes always on dim 1."""
        lead, m = episodes.shape[:-4], episodes.shape[-4]
        flat = episodes.reshape(-1, *episodes.shape[-4:])  # (E, M, C, H, W)
        n_support = self.n_way * self.k_shot
        feats = self.backbone(flat.reshape(-1, *flat.shape[2:])).reshape(flat.shape[0], m, -1)
        logits = torch.stack([self.head(f[:n_support], f[n_support:], self.n_way) for f in feats])  # (E, NQ, N)
        return torch.movedim(logits.reshape(*lead, *logits.shape[1:]), -1, 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FewShotConfig(Config):
    """Episodic training.

    Attributes:
        head: ``proto``, ``r2d2`` or ``anil`` (see ``HEADS``).
        n_way, k_shot, n_query: training episodes (a higher way than at test time helps ProtoNet, Snell et al.).
        episodes: training episodes in all.
        episodes_per_step: episodes in one optimizer step.
        lr: Adam learning rate (annealed to zero as a cosine over the run).
        checkpoint_every: with an output folder, save a resumable checkpoint every this many steps.
        seed: seeds the weights and the episodes.

    Example:
        >>> FewShotConfig(head="r2d2").n_way
        20
    """

    head: str = "proto"
    n_way: int = 20
    k_shot: int = 1
    n_query: int = 5
    episodes: int = 4000
    episodes_per_step: int = 1
    lr: float = 1e-3
    checkpoint_every: int = 100
    seed: int = 0

    def validate(self) -> None:
        """Checks every field."""
        HEADS.entry(self.head)
        check_range("n_way", self.n_way, 2, hint="use n_way=20")
        check_range("k_shot", self.k_shot, 1, hint="use k_shot=1")
        check_range("n_query", self.n_query, 1, hint="use n_query=5")
        check_range("episodes", self.episodes, 1, hint="use episodes=4000")
        check_range("episodes_per_step", self.episodes_per_step, 1, hint="use episodes_per_step=1")
        check_range("lr", self.lr, 0.0, low_open=True, hint="use lr=1e-3")
        check_range("checkpoint_every", self.checkpoint_every, 1, hint="use checkpoint_every=100")


def train_meta_learner(
    images: torch.Tensor,
    labels: torch.Tensor,
    config: FewShotConfig | None = None,
    *,
    backbone: nn.Module | None = None,
    augment: AugmentConfig | None = None,
    callbacks: Sequence[Callback] = (),
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = False,
) -> MetaLearner:
    """Trains a :class:`MetaLearner` on episodes drawn from ``(images, labels)`` (the training classes) with the
    one training loop: checkpoints in ``out_dir``, and ``resume=True`` continues a killed run exactly.
    ``callbacks`` are the loop's (e.g. distillation, pruning schedules); episode batches reach them as
    ``(x: (B, N(K+Q), C, H, W), y: (B, NQ))``. ``augment``: an :class:`~effdl.fewshot.AugmentConfig` (support,
    query and task augmentation; with ``maxup > 1`` Meta-MaxUp, the loss of the worst of ``m`` versions).

    Example:
        >>> x, y = torch.randn(40, 1, 28, 28), torch.arange(10).repeat_interleave(4)
        >>> m = train_meta_learner(x, y, FewShotConfig(n_way=3, n_query=2, episodes=2))
        >>> m.n_way
        3
    """
    config = config or FewShotConfig()
    torch.manual_seed(config.seed)
    model = MetaLearner(backbone, config.head, n_way=config.n_way, k_shot=config.k_shot)
    sampler = EpisodeSampler(labels, n_way=config.n_way, k_shot=config.k_shot, n_query=config.n_query,
                             seed=config.seed)  # fmt: skip
    data = EpisodeDataset(images, labels, sampler, length=config.episodes)
    loss_fn = None
    if augment is not None:
        data = AugmentedEpisodes(data, augment)
        loss_fn = maxup_loss if augment.maxup > 1 else None
        model.set_episode(config.n_way, data.k_shot)  # shot augmentation adds support images
    fit_one_pass(model, data, config.episodes_per_step, (config.lr, config.seed, config.checkpoint_every),
                 callbacks=callbacks, loss_fn=loss_fn, out_dir=out_dir, resume=resume, progress=progress)  # fmt: skip
    model.set_episode(config.n_way, config.k_shot)
    return model.eval()


def fit_one_pass(model: nn.Module, data, batch_size: int, how: tuple[float, int, int], *, callbacks=(), loss_fn=None,
                 out_dir=None, resume: bool = False, progress: bool = False) -> None:  # fmt: skip
    """One pass over ``data`` (episodes or class batches, drawn per index) with Adam and a cosine schedule in the
    one training loop; ``how`` is ``(lr, seed, checkpoint_every)`` (checkpoints only with ``out_dir``)."""
    lr, seed, every = how
    train = TrainConfig(epochs=1, batch_size=batch_size, optimizer="adam", lr=lr, schedule="cosine", seed=seed,
                        progress=progress, checkpoint_every_steps=every if out_dir is not None else 0)  # fmt: skip
    Trainer(model, train, callbacks=callbacks, out_dir=out_dir, loss_fn=loss_fn).fit(data, resume=resume)


@dataclasses.dataclass
class EpisodeScore:
    """Mean accuracy over test episodes and the half-width of its 95% confidence interval (normal approximation,
    ``1.96 * std / sqrt(episodes)``, as the few-shot literature reports)."""

    accuracy: float
    ci95: float
    episodes: int

    def __str__(self) -> str:
        return f"{100 * self.accuracy:.2f}% +- {100 * self.ci95:.2f}"

    def to_dict(self) -> dict[str, float]:
        """Plain dict."""
        return dataclasses.asdict(self)


@torch.no_grad()
def evaluate_episodes(
    model: MetaLearner,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
    episodes: int = 1000,
    seed: int = 1,
) -> EpisodeScore:
    """Accuracy of ``model`` on ``episodes`` N-way K-shot episodes of ``(images, labels)`` (held-out classes).

    Example:
        >>> x, y = torch.randn(40, 1, 28, 28), torch.arange(10).repeat_interleave(4)
        >>> s = evaluate_episodes(MetaLearner(), x, y, n_query=2, episodes=5)
        >>> 0.0 <= s.accuracy <= 1.0, s.episodes
        (True, 5)
    """
    sampler = EpisodeSampler(labels, n_way=n_way, k_shot=k_shot, n_query=n_query, seed=seed)
    was_training = model.training
    model.eval()
    accs = []
    truth = torch.arange(n_way).repeat_interleave(n_query)
    for i in range(episodes):
        e = sampler.episode(i)
        logits = model.classify(images[list(e.support)], images[list(e.query)], n_way)
        accs.append(float((logits.argmax(dim=1) == truth).float().mean()))
    model.train(was_training)
    acc = torch.tensor(accs, dtype=torch.float64)
    ci = 1.96 * float(acc.std(unbiased=True)) / math.sqrt(len(accs)) if len(accs) > 1 else float("nan")
    return EpisodeScore(accuracy=float(acc.mean()), ci95=ci, episodes=len(accs))


def save_meta_learner(model: MetaLearner, path: str | os.PathLike, config: FewShotConfig | None = None) -> Path:
    """Saves ``model`` (weights, head, episode layout, and the training config) as safetensors, atomically.

    Example:
        >>> import tempfile, pathlib
        >>> p = save_meta_learner(MetaLearner(head="r2d2"), pathlib.Path(tempfile.mkdtemp()) / "m.safetensors")
        >>> load_meta_learner(p).head.__class__.__name__
        'R2D2Head'
    """
    head = next((name for name in HEADS.names() if isinstance(model.head, HEADS.get(name))), None)
    meta = {"kind": "meta-learner", "head": head, "n_way": model.n_way, "k_shot": model.k_shot,
            "config": config.to_dict() if config is not None else None}  # fmt: skip
    return save_checkpoint(path, model.state_dict(), meta)


def load_meta_learner(path: str | os.PathLike, *, backbone: nn.Module | None = None) -> MetaLearner:
    """Loads a model saved by :func:`save_meta_learner` (pass ``backbone`` when it was not Conv-4)."""
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != "meta-learner" or meta.get("head") is None:
        raise CheckpointError(f"{path} is not a meta-learner saved by effdl (save_meta_learner); got meta {meta}")
    model = MetaLearner(backbone, meta["head"], n_way=meta["n_way"], k_shot=meta["k_shot"])
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit the backbone ({exc}); pass the backbone it was trained with")\
            from None
    return model.eval()
