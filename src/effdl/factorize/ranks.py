"""Rank selection: a registry of selectors (one function each) and the global budget search."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from effdl.core.registry import Registry
from effdl.factorize.config import LowRankConfig
from effdl.factorize.layers import factor_macs, factor_params, full_rank
from effdl.factorize.math import energy_rank

__all__ = ["RANK_SELECTORS", "LayerSpectrum", "global_energy"]


@dataclasses.dataclass
class LayerSpectrum:
    """What a rank selector sees of one layer.

    Attributes:
        name: module name.
        module: the layer.
        kind: ``svd``, ``channel`` or ``tucker2``.
        values: singular values, largest first: one tensor, or ``(of the output mode, of the input mode)`` for
            Tucker-2.
        positions: (input, output) positions per example, for MAC counts.
        params: parameters of the dense layer (weight and bias).
        macs: MACs per example of the dense layer.
    """

    name: str
    module: nn.Module
    kind: str
    values: tuple[torch.Tensor, ...]
    positions: tuple[int, int]
    params: int
    macs: int

    @property
    def full(self) -> tuple[int, ...]:
        """Ranks that reproduce the layer exactly."""
        return full_rank(self.module, self.kind)

    def cost(self, ranks: tuple[int, ...], target: str) -> int:
        """Parameters or MACs of the factorized layer."""
        if target == "macs":
            return factor_macs(self.module, self.kind, ranks, self.positions)
        return factor_params(self.module, self.kind, ranks)

    def dense_cost(self, target: str) -> int:
        """Parameters or MACs of the dense layer."""
        return self.macs if target == "macs" else self.params

    def ranks_for_energy(self, energy: float) -> tuple[int, ...]:
        """Per mode, the smallest rank keeping ``energy`` of the squared singular values."""
        return tuple(energy_rank(v, energy) for v in self.values)


#: rank selectors: ``fn(layer: LayerSpectrum, config: LowRankConfig) -> tuple of ranks``
RANK_SELECTORS: Registry[Callable[[LayerSpectrum, LowRankConfig], tuple[int, ...]]] = Registry("rank selector")


@RANK_SELECTORS.register("energy", description="smallest rank keeping `energy` of the squared singular values")
def _energy(layer: LayerSpectrum, config: LowRankConfig) -> tuple[int, ...]:
    return layer.ranks_for_energy(config.energy)


@RANK_SELECTORS.register("fixed", description="the same rank everywhere (capped at full rank)")
def _fixed(layer: LayerSpectrum, config: LowRankConfig) -> tuple[int, ...]:
    return tuple(min(config.rank, f) for f in layer.full)


@RANK_SELECTORS.register("keep", description="largest rank keeping at most `keep` of the layer's params/MACs")
def _ratio(layer: LayerSpectrum, config: LowRankConfig) -> tuple[int, ...]:
    budget = config.keep * layer.dense_cost(config.target)
    full = layer.full
    best = tuple(1 for _ in full)
    for step in range(1, max(full) + 1):  # ranks grow together, in proportion to each mode's full rank
        ranks = tuple(max(1, round(step * f / max(full))) for f in full)
        if layer.cost(ranks, config.target) > budget:
            break
        best = ranks
    return best


def global_energy(layers: list[LayerSpectrum], config: LowRankConfig) -> float:
    """The energy threshold, shared by all layers, whose ranks bring the layers' total cost (params or MACs) to
    at most ``config.keep`` of their dense total; layers that would not shrink count as dense. Bisection on the
    threshold (cost grows with it)."""

    def total(energy: float) -> int:
        cost = 0
        for layer in layers:
            dense = layer.dense_cost(config.target)
            cost += min(layer.cost(layer.ranks_for_energy(energy), config.target), dense)
        return cost

    budget = config.keep * sum(layer.dense_cost(config.target) for layer in layers)
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if total(max(mid, 1e-9)) <= budget:
            lo = mid
        else:
            hi = mid
    return max(lo, 1e-9)
