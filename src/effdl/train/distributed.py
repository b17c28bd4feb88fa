"""Data-parallel training through ``torch.distributed`` (launched by torchrun; gloo backend on CPU)."""

from __future__ import annotations

import dataclasses
import logging
import os

import torch
import torch.distributed as dist

__all__ = ["DistContext"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DistContext:
    """Rank and world size of this process; joins the process group that torchrun describes in the environment.

    Example:
        >>> ctx = DistContext.from_env()  # outside torchrun: a single process
        >>> ctx.world_size, ctx.is_main
        (1, True)
    """

    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @classmethod
    def from_env(cls) -> DistContext:
        """Reads ``WORLD_SIZE``/``RANK`` (set by torchrun) and initializes a gloo group if none exists yet."""
        if dist.is_available() and dist.is_initialized():
            return cls(rank=dist.get_rank(), world_size=dist.get_world_size())
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        dist.init_process_group(backend="gloo")
        log.info("joined process group: rank %d of %d (gloo)", dist.get_rank(), world)
        return cls(rank=dist.get_rank(), world_size=world, owns_group=True)

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and logs."""
        return self.rank == 0

    def mean(self, value: float) -> float:
        """The mean of ``value`` across processes."""
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def barrier(self) -> None:
        """Waits for every process."""
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        """Leaves the process group if this context created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False
