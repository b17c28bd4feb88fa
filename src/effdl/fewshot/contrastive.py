"""Meta-learning as contrastive learning (Ni et al., "The Close Relationship Between Contrastive Learning and
Meta-Learning", ICLR 2022): self-supervised pre-training on unlabeled images where each image of a batch is one
"class" and its augmented views are the support and query examples, so any few-shot head (ProtoNet, R2-D2, ANIL)
becomes a contrastive loss; SimCLR's NT-Xent (Chen et al., ICML 2020) is the reference. Encoders are judged by a
linear probe and by few-shot accuracy."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from effdl.core.callback import Callback
from effdl.core.config import Config, check_range
from effdl.core.errors import ConfigError
from effdl.fewshot.augment import cutout
from effdl.fewshot.clustering import embed
from effdl.fewshot.learner import HEADS, conv4, fit_one_pass

__all__ = [
    "CONTRASTIVE_HEADS",
    "ContrastiveConfig",
    "ContrastiveEpisodes",
    "ContrastiveLearner",
    "linear_probe",
    "pretrain_contrastive",
    "random_views",
]

CONTRASTIVE_HEADS = ("ntxent", *HEADS.names())


def random_views(images: torch.Tensor, g: torch.Generator, *, rotate: float = 20.0,
                 scale: tuple[float, float] = (0.75, 1.15), shift: float = 0.15, shear: float = 15.0,
                 thickness: float = 0.3, erase: float = 0.5) -> torch.Tensor:  # fmt: skip
    """One random view of each image: an affine transform (rotation up to ``rotate`` degrees, scale, shift up to
    ``shift`` of the side, shear up to ``shear`` degrees), with probability ``thickness`` a thicker stroke (3x3
    dilation: a bolder font weight; erosion would erase thin strokes), and with probability ``erase`` a random
    square erased.

    Example:
        >>> v = random_views(torch.rand(4, 1, 28, 28), torch.Generator().manual_seed(0))
        >>> tuple(v.shape)
        (4, 1, 28, 28)
    """
    n = images.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=g)

    angle, slant = torch.deg2rad(uniform(-rotate, rotate)), torch.deg2rad(uniform(-shear, shear))
    s = uniform(*scale)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(slant)
    forward = torch.stack([torch.stack([cos, cos * tan - sin], -1), torch.stack([sin, sin * tan + cos], -1)], -2)
    offset = 2 * torch.stack([uniform(-shift, shift), uniform(-shift, shift)], dim=-1)  # the side spans 2
    theta = torch.cat([torch.linalg.inv(forward * s[:, None, None]), offset[:, :, None]], dim=2)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")
    thicker = torch.rand(n, generator=g) < thickness
    out = torch.where(thicker[:, None, None, None], F.max_pool2d(out, 3, 1, 1), out)
    erased = torch.rand(n, generator=g) < erase
    return torch.where(erased[:, None, None, None], cutout(out, g, 0.35), out)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContrastiveConfig(Config):
    """Self-supervised pre-training.

    Attributes:
        head: ``ntxent`` (SimCLR) or a few-shot head (``proto``, ``r2d2``, ``anil``) on episodes whose classes are
            single images.
        ways: images per step (the episode's classes; SimCLR's batch).
        support_views, query_views: augmented views of each image in the support and in the query (NT-Xent: one
            each, SimCLR's two views).
        steps: optimizer steps.
        lr: Adam learning rate (cosine).
        temperature: NT-Xent's temperature (0.2 measured better than SimCLR's 0.5 at 64 images per step here).
        projection: width of the projection MLP between backbone and loss (SimCLR's ``g``); 0: none. Probes and
            few-shot evaluation use the backbone's features, before it.
        checkpoint_every: with an output folder, save a resumable checkpoint every this many steps.
        seed: seeds the weights, the images drawn and their views.

    Example:
        >>> ContrastiveConfig(head="proto").ways
        64
    """

    head: str = "ntxent"
    ways: int = 64
    support_views: int = 1
    query_views: int = 1
    steps: int = 2000
    lr: float = 1e-3
    temperature: float = 0.2
    projection: int = 64
    checkpoint_every: int = 100
    seed: int = 0

    def validate(self) -> None:
        """Checks every field."""
        if self.head not in CONTRASTIVE_HEADS:
            raise ConfigError(f"head must be one of {', '.join(CONTRASTIVE_HEADS)}, got {self.head!r}")
        check_range("ways", self.ways, 2, hint="use ways=64")
        check_range("support_views", self.support_views, 1, hint="use support_views=1")
        check_range("query_views", self.query_views, 1, hint="use query_views=1")
        if self.head == "ntxent" and (self.support_views, self.query_views) != (1, 1):
            raise ConfigError(
                "NT-Xent compares two views of each image: use support_views=1 and query_views=1 (more views need a "
                "few-shot head: proto, r2d2 or anil)"
            )
        check_range("steps", self.steps, 1, hint="use steps=2000")
        check_range("lr", self.lr, 0.0, low_open=True, hint="use lr=1e-3")
        check_range("temperature", self.temperature, 0.0, low_open=True, hint="use temperature=0.2")
        check_range("projection", self.projection, 0, hint="use projection=64, or 0 for none")
        check_range("checkpoint_every", self.checkpoint_every, 1, hint="use checkpoint_every=100")


class ContrastiveEpisodes(Dataset):
    """Item ``i``: ``ways`` images drawn without labels, each augmented into ``support_views + query_views`` views,
    laid out as an episode (support views class by class, then query views): ``x`` of shape
    ``(ways * (S + Q), C, H, W)``; ``y`` the query's class (its image), or for NT-Xent the index of each view's
    partner among all ``2 * ways`` views. Depends only on ``(seed, i)``.

    Example:
        >>> x, y = ContrastiveEpisodes(torch.rand(10, 1, 8, 8), ContrastiveConfig(ways=3), length=1)[0]
        >>> tuple(x.shape), y.tolist()
        ((6, 1, 8, 8), [3, 4, 5, 0, 1, 2])
    """

    def __init__(self, images: torch.Tensor, config: ContrastiveConfig, *, length: int) -> None:
        if len(images) < config.ways:
            raise ConfigError(f"{config.ways} ways need at least {config.ways} images, got {len(images)}; lower ways")
        self.images, self.config, self.length = images, config, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + index)
        picked = self.images[torch.randperm(len(self.images), generator=g)[: cfg.ways]]
        views = [random_views(picked, g) for _ in range(cfg.support_views + cfg.query_views)]
        support = torch.stack(views[: cfg.support_views], dim=1).flatten(0, 1)  # image by image
        query = torch.stack(views[cfg.support_views :], dim=1).flatten(0, 1)
        if cfg.head == "ntxent":
            y = (torch.arange(2 * cfg.ways) + cfg.ways) % (2 * cfg.ways)
        else:
            y = torch.arange(cfg.ways).repeat_interleave(cfg.query_views)
        return torch.cat([support, query]), y


class ContrastiveLearner(nn.Module):
    """A backbone, a projection MLP and a contrastive loss head; ``forward`` takes a batch of
    :class:`ContrastiveEpisodes` items ``(B, M, C, H, W)`` and returns logits with the classes on dim 1, for
    cross-entropy: ``(B, ways, ways * Q)`` for a few-shot head, ``(B, 2 ways, 2 ways)`` for NT-Xent (each view's
    similarities to the other views over the temperature, itself excluded).

    Example:
        >>> m = ContrastiveLearner(conv4(), ContrastiveConfig(ways=4))
        >>> m(torch.rand(2, 8, 1, 28, 28)).shape
        torch.Size([2, 8, 8])
    """

    def __init__(self, backbone: nn.Module, config: ContrastiveConfig, dim: int = 64) -> None:
        super().__init__()
        self.backbone, self.config = backbone, config
        p = config.projection
        self.projector = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, p)) if p else nn.Identity()
        self.head = HEADS.get(config.head)() if config.head != "ntxent" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Episodes -> logits with classes on dim 1."""
        b, m = x.shape[:2]
        z = self.projector(self.backbone(x.reshape(b * m, *x.shape[2:]))).reshape(b, m, -1)
        ways, n_support = self.config.ways, self.config.ways * self.config.support_views
        if self.head is None:
            z = F.normalize(z, dim=-1)
            sim = z @ z.transpose(1, 2) / self.config.temperature  # (B, 2W, 2W)
            logits = sim.masked_fill(torch.eye(m, dtype=torch.bool, device=z.device), -math.inf)
        else:
            logits = torch.stack([self.head(e[:n_support], e[n_support:], ways) for e in z])  # (B, WQ, W)
        return torch.movedim(logits, -1, 1)


def pretrain_contrastive(
    images: torch.Tensor,
    config: ContrastiveConfig | None = None,
    *,
    backbone: nn.Module | None = None,
    callbacks: Sequence[Callback] = (),
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = False,
) -> nn.Module:
    """Pre-trains ``backbone`` (default :func:`conv4`) on unlabeled ``images`` with ``config.head`` as the loss, in
    the one training loop (``callbacks`` are the loop's; checkpoints in ``out_dir``; ``resume=True`` continues a killed
    run exactly); returns the backbone in eval mode (the projection head is dropped, as in SimCLR).

    Example:
        >>> net = pretrain_contrastive(torch.rand(20, 1, 28, 28), ContrastiveConfig(head="proto", ways=4, steps=2))
        >>> net(torch.rand(3, 1, 28, 28)).shape
        torch.Size([3, 64])
    """
    config = config or ContrastiveConfig()
    torch.manual_seed(config.seed)
    backbone = backbone if backbone is not None else conv4(images.shape[1])
    dim = embed(backbone, images[:2]).shape[1]
    model = ContrastiveLearner(backbone, config, dim)
    data = ContrastiveEpisodes(images, config, length=config.steps)
    fit_one_pass(model, data, 1, (config.lr, config.seed, config.checkpoint_every), callbacks=callbacks,
                 out_dir=out_dir, resume=resume, progress=progress)  # fmt: skip
    return model.backbone.eval()


def linear_probe(
    backbone: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    fit_per_class: int | None = None,
    weight_decay: float = 1e-3,
    iterations: int = 300,
    seed: int = 0,
) -> float:
    """Linear-probe accuracy of ``backbone``'s frozen features: a multinomial logistic regression (L-BFGS, L2
    ``weight_decay``, standardized features) fitted on ``fit_per_class`` examples of each class (default half) and
    scored on the rest.

    Example:
        >>> x, y = torch.rand(40, 1, 28, 28), torch.arange(4).repeat_interleave(10)
        >>> 0.0 <= linear_probe(conv4(), x, y, iterations=5) <= 1.0
        True
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    fit_idx, test_idx = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = fit_per_class if fit_per_class is not None else len(idx) // 2
        if not 1 <= k < len(idx):
            raise ConfigError(f"class {c} has {len(idx)} examples: fit_per_class must be between 1 and {len(idx) - 1}")
        fit_idx.append(idx[:k])
        test_idx.append(idx[k:])
    fit_idx, test_idx = torch.cat(fit_idx), torch.cat(test_idx)
    feats = embed(backbone, images).double()
    mean, std = feats[fit_idx].mean(0), feats[fit_idx].std(0).clamp_min(1e-6)
    feats = (feats - mean) / std
    _, classes = torch.unique(labels, return_inverse=True)
    n_classes = int(classes.max()) + 1
    w = torch.zeros(feats.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe")
    x, y = feats[fit_idx], classes[fit_idx]

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((feats[test_idx] @ w + b).argmax(dim=1) == classes[test_idx]).double().mean())
