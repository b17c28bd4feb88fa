"""Data augmentation for meta-learning (Ni et al., "Data Augmentation for Meta-Learning", ICML 2021): augment the
support images, the query images (including CutMix, which mixes their labels), the shots (augmented copies added to
the support), or the task (a class rotated by a multiple of 90 degrees is a new class), and Meta-MaxUp: draw ``m``
augmented versions of each episode and train on the one with the largest loss."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from effdl.core.config import Config, check_range
from effdl.core.errors import ConfigError
from effdl.core.registry import Registry
from effdl.data.episodes import EpisodeDataset

__all__ = [
    "AUGMENTATIONS",
    "AugmentConfig",
    "AugmentedEpisodes",
    "cutmix",
    "cutout",
    "maxup_loss",
    "self_mix",
    "shift",
]


def cutout(images: torch.Tensor, g: torch.Generator, size: float = 0.4) -> torch.Tensor:
    """Random erasing: a square of ``size`` times the side, at a random place of each image, set to zero.

    Example:
        >>> out = cutout(torch.ones(2, 1, 10, 10), torch.Generator().manual_seed(0))
        >>> int((out == 0).sum(dim=(1, 2, 3))[0])
        16
    """
    n, _, h, w = images.shape
    side = max(1, round(size * min(h, w)))
    top = torch.randint(0, h - side + 1, (n,), generator=g)
    left = torch.randint(0, w - side + 1, (n,), generator=g)
    rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < top[:, None, None] + side)
              & (cols >= left[:, None, None]) & (cols < left[:, None, None] + side))  # fmt: skip
    return images.masked_fill(inside[:, None], 0.0)


def self_mix(images: torch.Tensor, g: torch.Generator, size: float = 0.4) -> torch.Tensor:
    """Self-mix: a square patch of each image pasted at another random place of the same image (label kept)."""
    n, _, h, w = images.shape
    side = max(1, round(size * min(h, w)))
    out = images.clone()
    for i in range(n):
        ty, tx, sy, sx = (int(v) for v in torch.randint(0, min(h, w) - side + 1, (4,), generator=g))
        out[i, :, ty : ty + side, tx : tx + side] = images[i, :, sy : sy + side, sx : sx + side]
    return out


def shift(images: torch.Tensor, g: torch.Generator, pixels: int = 3) -> torch.Tensor:
    """A random translation of up to ``pixels`` in each direction, zero-padded."""
    n = images.shape[0]
    d = torch.randint(-pixels, pixels + 1, (n, 2), generator=g)
    padded = F.pad(images, (pixels, pixels, pixels, pixels))
    h, w = images.shape[-2:]
    return torch.stack([padded[i, :, pixels + dy : pixels + dy + h, pixels + dx : pixels + dx + w]
                        for i, (dy, dx) in enumerate(d.tolist())])  # fmt: skip


def cutmix(images: torch.Tensor, targets: torch.Tensor, g: torch.Generator, p: float = 1.0) -> tuple[torch.Tensor,
           torch.Tensor]:  # fmt: skip
    """CutMix (Yun et al., ICCV 2019): with probability ``p`` an image gets a box of another image of the batch (area
    share ``1 - lambda``, ``lambda ~ U(0, 1)``) and its label becomes ``lambda`` of its own and ``1 - lambda`` of the
    other's, ``lambda`` corrected to the box actually pasted. ``targets``: ``(n, classes)`` probabilities.

    Example:
        >>> x, t = cutmix(torch.zeros(2, 1, 4, 4), torch.eye(2), torch.Generator().manual_seed(0))
        >>> torch.allclose(t.sum(dim=1), torch.ones(2))
        True
    """
    n, _, h, w = images.shape
    out, mixed = images.clone(), targets.clone()
    for i in range(n):
        if float(torch.rand(1, generator=g)) >= p or n < 2:
            continue
        j = (i + int(torch.randint(1, n, (1,), generator=g))) % n  # another image
        cut = math.sqrt(1.0 - float(torch.rand(1, generator=g)))
        bh, bw = round(h * cut), round(w * cut)
        cy, cx = int(torch.randint(0, h, (1,), generator=g)), int(torch.randint(0, w, (1,), generator=g))
        top, bottom = max(cy - bh // 2, 0), min(cy + (bh - bh // 2), h)
        left, right = max(cx - bw // 2, 0), min(cx + (bw - bw // 2), w)
        out[i, :, top:bottom, left:right] = images[j, :, top:bottom, left:right]
        share = (bottom - top) * (right - left) / (h * w)
        mixed[i] = (1.0 - share) * targets[i] + share * targets[j]
    return out, mixed


AUGMENTATIONS: Registry = Registry("episode augmentation")
AUGMENTATIONS.add("cutout", cutout, description="random erasing of a square")
AUGMENTATIONS.add("self-mix", self_mix, description="a patch of the image pasted elsewhere in it")
AUGMENTATIONS.add("shift", shift, description="random translation by up to 3 pixels")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentConfig(Config):
    """What is augmented in each training episode.

    Attributes:
        support: augmentations of the support images (names in ``AUGMENTATIONS``), applied in order.
        query: augmentations of the query images.
        query_cutmix: probability that a query image gets CutMix with another query image (its target then mixes
            the two classes: the episode's targets become ``(N, NQ)`` class probabilities).
        shots: augmentations that make extra shots: ``shot_copies`` augmented copies of each support image are
            added to the support (shot augmentation; the learner then sees ``K * (1 + shot_copies)`` shots).
        shot_copies: copies per support image (0: off).
        task_rotation: probability that an episode class is rotated by 90, 180 or 270 degrees (all its images:
            a new class, "task augmentation").
        maxup: Meta-MaxUp's ``m``: augmented versions drawn per episode; the loss is their maximum (1: off).
        seed: seeds the augmentations.

    Example:
        >>> AugmentConfig(query=("cutout",), maxup=4).maxup
        4
    """

    support: tuple[str, ...] = ()
    query: tuple[str, ...] = ()
    query_cutmix: float = 0.0
    shots: tuple[str, ...] = ()
    shot_copies: int = 0
    task_rotation: float = 0.0
    maxup: int = 1
    seed: int = 0

    def validate(self) -> None:
        """Checks every field."""
        for name in (*self.support, *self.query, *self.shots):
            AUGMENTATIONS.entry(name)
        check_range("query_cutmix", self.query_cutmix, 0.0, 1.0, hint="use query_cutmix=0.5")
        check_range("shot_copies", self.shot_copies, 0, hint="use shot_copies=1")
        if self.shot_copies and not self.shots:
            raise ConfigError("shot augmentation needs the augmentations that make its copies: e.g. shots=('shift',)")
        check_range("task_rotation", self.task_rotation, 0.0, 1.0, hint="use task_rotation=0.5")
        check_range("maxup", self.maxup, 1, hint="use maxup=4 for Meta-MaxUp, 1 for none")


class AugmentedEpisodes(Dataset):
    """The episodes of ``base`` augmented per ``config``: item ``i`` is ``(x, y)`` with ``x`` of shape
    ``(m, N(K'+Q), C, H, W)`` and ``y`` ``(m, NQ)`` for ``m = config.maxup`` versions (without the leading ``m`` when
    ``m == 1``), where ``K' = K * (1 + shot_copies)``; with query CutMix ``y`` holds class probabilities instead,
    ``(N, m, NQ)`` (``(N, NQ)`` when ``m == 1``), classes first as the logits have them. The ``j``-th version of
    episode ``i`` depends only on ``(config.seed, i, j)``.

    Example:
        >>> from effdl.data import EpisodeSampler
        >>> images, labels = torch.rand(12, 1, 8, 8), torch.arange(3).repeat_interleave(4)
        >>> base = EpisodeDataset(images, labels, EpisodeSampler(labels, n_way=2, k_shot=1, n_query=2), length=2)
        >>> x, y = AugmentedEpisodes(base, AugmentConfig(query=("cutout",), maxup=3))[0]
        >>> tuple(x.shape), tuple(y.shape)
        ((3, 6, 1, 8, 8), (3, 4))
    """

    def __init__(self, base: EpisodeDataset, config: AugmentConfig) -> None:
        if not isinstance(base, EpisodeDataset):
            raise ConfigError(f"AugmentedEpisodes wraps an EpisodeDataset, got {type(base).__name__}")
        self.base, self.config = base, config
        s = base.sampler
        self.n_support = s.n_way * s.k_shot
        #: the shots the learner sees (support images and their augmented copies)
        self.k_shot = s.k_shot * (1 + config.shot_copies)

    def __len__(self) -> int:
        return len(self.base)

    def _version(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, s = self.config, self.base.sampler
        support, query = x[: self.n_support], x[self.n_support :]
        shape = x.shape[1:]
        originals = support
        for name in cfg.support:
            support = AUGMENTATIONS.get(name)(support, g)
        if cfg.shot_copies:
            copies = []
            for _ in range(cfg.shot_copies):
                copy = originals
                for name in cfg.shots:
                    copy = AUGMENTATIONS.get(name)(copy, g)
                copies.append(copy.reshape(s.n_way, s.k_shot, *shape))
            support = torch.cat([support.reshape(s.n_way, s.k_shot, *shape), *copies], dim=1).flatten(0, 1)
        if cfg.task_rotation > 0:
            support = support.reshape(s.n_way, self.k_shot, *shape).clone()
            query = query.reshape(s.n_way, s.n_query, *shape).clone()
            for c in range(s.n_way):
                if float(torch.rand(1, generator=g)) < cfg.task_rotation:
                    k = int(torch.randint(1, 4, (1,), generator=g))
                    support[c] = torch.rot90(support[c], k, dims=(-2, -1))
                    query[c] = torch.rot90(query[c], k, dims=(-2, -1))
            support, query = support.flatten(0, 1), query.flatten(0, 1)
        for name in cfg.query:
            query = AUGMENTATIONS.get(name)(query, g)
        if cfg.query_cutmix > 0:
            query, soft = cutmix(query, F.one_hot(y, s.n_way).to(x.dtype), g, cfg.query_cutmix)
            y = soft.T  # (N, NQ): classes first, as the logits
        return torch.cat([support, query]), y

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.base[index]
        versions, targets = [], []
        for j in range(self.config.maxup):
            g = torch.Generator().manual_seed((self.config.seed * 1_000_003 + index) * 64 + j)
            xv, yv = self._version(x, y, g)
            versions.append(xv)
            targets.append(yv)
        if self.config.maxup == 1:
            return versions[0], targets[0]
        return torch.stack(versions), torch.stack(targets, dim=-2)  # (m, NQ), or (N, m, NQ) for class probabilities


def maxup_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Meta-MaxUp's loss: cross-entropy of each augmented version of an episode, the largest per episode, averaged
    over episodes (Ni et al. 2021, eq. 3). ``outputs``: ``(B, N, m, NQ)`` logits; ``targets``: ``(B, m, NQ)`` classes
    or ``(B, N, m, NQ)`` class probabilities (query CutMix).

    Example:
        >>> logits = torch.zeros(1, 2, 2, 1); logits[0, 0, 0, 0] = 5.0  # version 0 right and sure, version 1 unsure
        >>> round(float(maxup_loss(logits, torch.zeros(1, 2, 1, dtype=torch.long))), 4)  # log 2, version 1's loss
        0.6931
    """
    per = F.cross_entropy(outputs, targets, reduction="none")  # (B, m, NQ)
    return per.mean(dim=-1).max(dim=-1).values.mean()
