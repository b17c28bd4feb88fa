"""Data augmentation for meta-learning (Ni et al., "Data Augmentation for Meta-Learning", ICML 2021): augment the
support images, the query images, or the task (a class rotated by a multiple of 90 degrees is a new class), and
Meta-MaxUp: draw ``m`` augmented versions of each episode and train on the one with the largest loss."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from effdl.core.config import Config, check_range
from effdl.core.errors import ConfigError
from effdl.core.registry import Registry
from effdl.data.episodes import EpisodeDataset

__all__ = ["AUGMENTATIONS", "AugmentConfig", "AugmentedEpisodes", "cutout", "maxup_loss", "self_mix", "shift"]


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
    task_rotation: float = 0.0
    maxup: int = 1
    seed: int = 0

    def validate(self) -> None:
        """Checks every field."""
        for name in (*self.support, *self.query):
            AUGMENTATIONS.entry(name)
        check_range("task_rotation", self.task_rotation, 0.0, 1.0, hint="use task_rotation=0.5")
        check_range("maxup", self.maxup, 1, hint="use maxup=4 for Meta-MaxUp, 1 for none")


class AugmentedEpisodes(Dataset):
    """The episodes of ``base`` augmented per ``config``: item ``i`` is ``(x, y)`` with ``x`` of shape
    ``(m, N(K+Q), C, H, W)`` and ``y`` ``(m, NQ)`` for ``m = config.maxup`` versions (without the leading ``m`` when
    ``m == 1``); the ``j``-th version of episode ``i`` depends only on ``(config.seed, i, j)``.

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
        self.shots = s.k_shot + s.n_query

    def __len__(self) -> int:
        return len(self.base)

    def _version(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg, s = self.config, self.base.sampler
        support, query = x[: self.n_support], x[self.n_support :]
        for name in cfg.support:
            support = AUGMENTATIONS.get(name)(support, g)
        for name in cfg.query:
            query = AUGMENTATIONS.get(name)(query, g)
        if cfg.task_rotation > 0:
            support = support.reshape(s.n_way, s.k_shot, *x.shape[1:]).clone()
            query = query.reshape(s.n_way, s.n_query, *x.shape[1:]).clone()
            for c in range(s.n_way):
                if float(torch.rand(1, generator=g)) < cfg.task_rotation:
                    k = int(torch.randint(1, 4, (1,), generator=g))
                    support[c] = torch.rot90(support[c], k, dims=(-2, -1))
                    query[c] = torch.rot90(query[c], k, dims=(-2, -1))
            support, query = support.flatten(0, 1), query.flatten(0, 1)
        return torch.cat([support, query])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.base[index]
        versions = []
        for j in range(self.config.maxup):
            g = torch.Generator().manual_seed((self.config.seed * 1_000_003 + index) * 64 + j)
            versions.append(self._version(x, g))
        if self.config.maxup == 1:
            return versions[0], y
        return torch.stack(versions), y.expand(self.config.maxup, -1).clone()


def maxup_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Meta-MaxUp's loss: cross-entropy of each augmented version of an episode, the largest per episode, averaged
    over episodes (Ni et al. 2021, eq. 3). ``outputs``: ``(B, N, m, NQ)`` logits; ``targets``: ``(B, m, NQ)``.

    Example:
        >>> logits = torch.zeros(1, 2, 2, 1); logits[0, 0, 0, 0] = 5.0  # version 0 right and sure, version 1 unsure
        >>> round(float(maxup_loss(logits, torch.zeros(1, 2, 1, dtype=torch.long))), 4)  # log 2, version 1's loss
        0.6931
    """
    per = F.cross_entropy(outputs, targets, reduction="none")  # (B, m, NQ)
    return per.mean(dim=-1).max(dim=-1).values.mean()
