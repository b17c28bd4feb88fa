"""Few-shot episodes from any labelled dataset: N classes, K support and Q query examples of each."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset

from effdl.core.config import check_range
from effdl.core.errors import ConfigError

__all__ = ["Episode", "EpisodeDataset", "EpisodeSampler"]


@dataclasses.dataclass(frozen=True)
class Episode:
    """Indices into the dataset of one episode.

    Attributes:
        classes: the N dataset labels drawn, in episode order (episode label ``i`` is ``classes[i]``).
        support: ``N * K`` indices, class by class (K of episode class 0, then K of class 1, ...).
        query: ``N * Q`` indices, class by class.
    """

    classes: tuple[int, ...]
    support: tuple[int, ...]
    query: tuple[int, ...]


class EpisodeSampler:
    """Draws N-way K-shot episodes (Q queries per class) among the classes of ``labels`` that have at least K + Q
    examples; the i-th episode depends only on ``(seed, i)``, so a resumed run sees the same episodes.

    Args:
        labels: one label per example of the dataset (a sequence or tensor of ints).
        n_way, k_shot, n_query: N, K and Q.
        seed: seeds every episode.
        classes: draw only among these labels (None: all); e.g. the classes of one split.

    Example:
        >>> s = EpisodeSampler([0, 0, 1, 1, 2, 2], n_way=2, k_shot=1, n_query=1, seed=0)
        >>> e = s.episode(0)
        >>> len(e.classes), len(e.support), len(e.query), set(e.support).isdisjoint(e.query)
        (2, 2, 2, True)
    """

    def __init__(self, labels: Sequence[int] | torch.Tensor, *, n_way: int, k_shot: int, n_query: int, seed: int = 0,
                 classes: Sequence[int] | None = None) -> None:  # fmt: skip
        check_range("n_way", n_way, 2, hint="use n_way=5")
        check_range("k_shot", k_shot, 1, hint="use k_shot=1 or 5")
        check_range("n_query", n_query, 1, hint="use n_query=15")
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        wanted = set(int(c) for c in classes) if classes is not None else None
        by_class: dict[int, torch.Tensor] = {}
        for c in torch.unique(labels).tolist():
            if wanted is None or c in wanted:
                idx = torch.nonzero(labels == c).flatten()
                if len(idx) >= k_shot + n_query:
                    by_class[c] = idx
        if len(by_class) < n_way:
            raise ConfigError(
                f"{n_way}-way episodes with {k_shot} support + {n_query} query examples per class need {n_way} "
                f"classes with at least {k_shot + n_query} examples, found {len(by_class)}; lower n_way, k_shot "
                "or n_query"
            )
        self.n_way, self.k_shot, self.n_query, self.seed = n_way, k_shot, n_query, seed
        self.classes = sorted(by_class)
        self._by_class = by_class

    def episode(self, index: int) -> Episode:
        """The ``index``-th episode."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        pick = torch.randperm(len(self.classes), generator=g)[: self.n_way]
        classes = tuple(self.classes[int(i)] for i in pick)
        support, query = [], []
        for c in classes:
            idx = self._by_class[c]
            chosen = idx[torch.randperm(len(idx), generator=g)[: self.k_shot + self.n_query]].tolist()
            support.extend(chosen[: self.k_shot])
            query.extend(chosen[self.k_shot :])
        return Episode(classes=classes, support=tuple(support), query=tuple(query))

    def __iter__(self) -> Iterator[Episode]:
        i = 0
        while True:
            yield self.episode(i)
            i += 1


class EpisodeDataset(Dataset):
    """``length`` episodes of ``sampler`` over ``(images, labels)``, one per index: item ``i`` is
    ``(x, y)`` with ``x`` the ``N * (K + Q)`` images (support first, class by class, then queries) and ``y`` the
    ``N * Q`` query labels in ``0..N-1`` (the support labels follow from the order). A batch of episodes is then
    ``x: (B, N(K+Q), C, H, W)``, ``y: (B, NQ)``, which the one training loop takes as it is.

    Example:
        >>> images, labels = torch.randn(6, 1, 4, 4), torch.tensor([0, 0, 1, 1, 2, 2])
        >>> ds = EpisodeDataset(images, labels, EpisodeSampler(labels, n_way=2, k_shot=1, n_query=1), length=3)
        >>> x, y = ds[0]
        >>> x.shape, y.tolist()
        (torch.Size([4, 1, 4, 4]), [0, 1])
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, sampler: EpisodeSampler, *, length: int) -> None:
        check_range("length", length, 1, hint="use length=1000 episodes")
        if len(images) != len(labels):
            raise ConfigError(f"images and labels differ in length: {len(images)} vs {len(labels)}")
        self.images, self.labels, self.sampler, self.length = images, labels, sampler, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.sampler.episode(index)
        idx = torch.tensor(e.support + e.query)
        y = torch.arange(self.sampler.n_way).repeat_interleave(self.sampler.n_query)
        return self.images[idx], y
