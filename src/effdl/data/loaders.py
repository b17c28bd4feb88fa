"""Seeded, resumable data loading: an epoch sampler that shards across processes and can skip ahead, loaders
built on it, a validation split and a calibration subset for post-training quantization."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from effdl.core.config import check_range
from effdl.core.errors import ConfigError

__all__ = ["EpochSampler", "calibration_subset", "make_loader", "split_validation"]


class EpochSampler(Sampler[int]):
    """Yields the indices of one epoch: a permutation seeded by ``(seed, epoch)``, sharded by rank, optionally
    starting after ``skip`` samples of this rank, so that a resumed run sees exactly the samples it would have.

    Every rank gets the same number of samples (the permutation is padded by wrapping around, as in
    ``DistributedSampler``).

    Args:
        size: dataset length.
        seed: base seed.
        shuffle: permute (True) or keep order.
        rank: this process's rank.
        world_size: number of processes.

    Example:
        >>> s = EpochSampler(6, seed=0, world_size=2, rank=1)
        >>> s.set_epoch(0); a = list(s)
        >>> s.set_epoch(0); a == list(s), len(a)
        (True, 3)
    """

    def __init__(self, size: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if size <= 0:
            raise ConfigError(f"cannot sample from an empty dataset (size={size}); check the data")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.size, self.seed, self.shuffle, self.rank, self.world_size = size, seed, shuffle, rank, world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Selects the epoch's permutation; ``skip`` drops that many of this rank's first samples (resume)."""
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = -(-self.size // self.world_size) * self.world_size
        order += order[: total - self.size]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.skip :])

    def __len__(self) -> int:
        return max(0, -(-self.size // self.world_size) - self.skip)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader over ``dataset`` driven by an :class:`EpochSampler` (reachable as ``loader.sampler``).

    Example:
        >>> ds = torch.utils.data.TensorDataset(torch.arange(10.))
        >>> [b[0].tolist() for b in make_loader(ds, 4)]
        [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0]]
    """
    check_range("batch_size", batch_size, 1, hint="use batch_size=64")
    sampler = EpochSampler(len(dataset), seed=seed, shuffle=shuffle, rank=rank, world_size=world_size)
    # a private generator: creating the loader's iterator must not draw from the global RNG, or a resumed run
    # would see different dropout masks than an uninterrupted one
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, generator=generator)


def split_validation(dataset: Dataset, fraction: float, *, seed: int = 0) -> tuple[Subset, Subset]:
    """Splits ``dataset`` into (train, validation) subsets with a seeded permutation.

    Example:
        >>> ds = torch.utils.data.TensorDataset(torch.arange(10.))
        >>> tr, va = split_validation(ds, 0.2)
        >>> len(tr), len(va)
        (8, 2)
    """
    check_range("fraction", fraction, 0.0, 1.0, low_open=True, high_open=True, hint="use fraction=0.1")
    n = len(dataset)
    n_val = max(1, round(n * fraction))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, perm[n_val:]), Subset(dataset, perm[:n_val])


def calibration_subset(dataset: Dataset, num_examples: int, *, seed: int = 0) -> torch.Tensor:
    """``num_examples`` inputs drawn without replacement (seeded), stacked into one tensor, e.g. for PTQ calibration.

    Example:
        >>> ds = torch.utils.data.TensorDataset(torch.randn(50, 1, 40), torch.zeros(50))
        >>> calibration_subset(ds, 8).shape
        torch.Size([8, 1, 40])
    """
    n = len(dataset)
    if not 1 <= num_examples <= n:
        raise ConfigError(
            f"num_examples must be in [1, {n}] (the dataset size), got num_examples={num_examples}; "
            "a few hundred examples are usually enough for calibration"
        )
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:num_examples].tolist()
    return torch.stack([dataset[i][0] for i in idx])
