"""Importance criteria for structured pruning: one score per removable channel of a group (low = removed first).

A criterion is ``f(group, tensors, grads, generator) -> scores`` where ``tensors`` maps state_dict keys to the
model's tensors and ``grads`` the gradients of parameters (for criteria registered with ``needs_grad``) or the
input-feature norms ``||X_j||`` of every Linear layer that consumes a group's channels, by module name (for criteria
registered with ``needs_inputs``). Register new ones in :data:`CRITERIA`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch

from effdl.core.registry import Registry
from effdl.prune.graph import Group, Site

__all__ = ["CRITERIA", "Criterion", "channel_scores"]

log = logging.getLogger(__name__)

Criterion = Callable[
    [Group, Mapping[str, torch.Tensor], Mapping[str, torch.Tensor] | None, torch.Generator], torch.Tensor
]
CRITERIA: Registry[Criterion] = Registry("importance criterion")


def channel_scores(group: Group, per_index: Callable[[Site], torch.Tensor | None]) -> torch.Tensor:
    """Sums, for each channel, ``per_index(site)[i]`` over every index ``i`` the channel occupies in every site
    (sites where ``per_index`` returns None are skipped).

    Example:
        >>> from effdl.prune.graph import Channel
        >>> s = Site("fc", "weight", 0, "out")
        >>> g = Group("fc", ("fc",), "channels", [Channel(0, {s: [0]}), Channel(1, {s: [1]})])
        >>> channel_scores(g, lambda site: torch.tensor([3.0, 5.0]))
        tensor([3., 5.], dtype=torch.float64)
    """
    scores = torch.zeros(len(group.channels), dtype=torch.float64)
    for site in group.sites():
        values = per_index(site)
        if values is None:
            continue
        owner, idx = [], []
        for c, ch in enumerate(group.channels):
            ii = ch.indices(site)
            idx.extend(ii)
            owner.extend([c] * len(ii))
        scores.index_add_(
            0, torch.tensor(owner, dtype=torch.long), values.double()[torch.tensor(idx, dtype=torch.long)]
        )
    return scores


def _reduce(t: torch.Tensor, dim: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Per-index sum of ``fn(t)`` over every axis but ``dim``: shape (t.shape[dim],)."""
    x = fn(t.detach().float()).movedim(dim, 0)
    return x.reshape(x.shape[0], -1).sum(dim=1)


def _filters(site: Site) -> bool:
    return site.role == "out" and site.tensor == "weight"


def _bn_factor(group: Group, site: Site, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor | float:
    """|gamma| / sqrt(var + eps) of the BatchNorm that directly follows the producer of ``site`` (1 if none): the
    per-filter scale that folding the BN into the conv applies."""
    bn = group.folds.get(site.module)
    if bn is None or f"{bn}.weight" not in tensors or f"{bn}.running_var" not in tensors:
        return 1.0
    gamma, var = tensors[f"{bn}.weight"].detach().double(), tensors[f"{bn}.running_var"].detach().double()
    return gamma.abs() / (var + 1e-5).sqrt()


def _filter_norms(group: Group, tensors, fn, *, fold: bool) -> torch.Tensor:
    def per_index(s: Site):
        if not _filters(s):
            return None
        values = _reduce(tensors[s.key], s.dim, fn).double()
        return values * (_bn_factor(group, s, tensors) if fold else 1.0)

    return channel_scores(group, per_index)


@CRITERIA.register("l1", description="sum of |w| of each filter, BN folded in (Li et al. 2017)")
def l1_norm(group, tensors, grads, generator):
    """L1 norm of each channel's filters as the deployed network uses them: a BatchNorm directly after the layer is
    folded in (filter scaled by |gamma| / sqrt(var + eps)); without BN this is exactly Li et al.'s criterion.
    Summed over the producers a channel is shared by."""
    return _filter_norms(group, tensors, torch.abs, fold=True)


@CRITERIA.register("l1_raw", description="sum of |w| of each filter as stored, BN ignored (Li et al. verbatim)")
def l1_raw(group, tensors, grads, generator):
    """L1 norm of the stored filter weights, ignoring any BatchNorm (Li et al., ICLR 2017, as written)."""
    return _filter_norms(group, tensors, torch.abs, fold=False)


@CRITERIA.register("l2", description="L2 norm of each filter, BN folded in")
def l2_norm(group, tensors, grads, generator):
    """L2 norm of each channel's filters (BN folded in as for ``l1``), over all producers."""
    return _filter_norms(group, tensors, lambda t: t.square(), fold=True).sqrt()


@CRITERIA.register("bn_scale", description="|gamma| of the channel's norm layers (network slimming, Liu et al. 2017)")
def bn_scale(group, tensors, grads, generator):
    """|gamma| of the BatchNorm (or other per-channel norm) scales; groups without one fall back to L1."""
    has_norm = any(s.role == "norm" and s.tensor == "weight" for s in group.sites())
    if not has_norm:
        log.debug("group %s has no norm layer; bn_scale falls back to the L1 norm", group.name)
        return l1_norm(group, tensors, grads, generator)
    return channel_scores(
        group, lambda s: tensors[s.key].detach().abs().float() if s.role == "norm" and s.tensor == "weight" else None
    )


@CRITERIA.register(
    "taylor", description="(sum of grad*w over the channel's parameters)^2 (Molchanov et al. 2019)", needs_grad=True
)
def taylor(group, tensors, grads, generator):
    """First-order Taylor estimate of the loss change when a channel is removed: ``(sum_s g_s w_s)^2`` over every
    parameter entry the channel owns (Molchanov et al., CVPR 2019, eq. 8). Averaged over batches by the caller."""
    if grads is None:
        raise ValueError("taylor needs gradients")

    def gw(site: Site):
        if site.role == "stat" or site.key not in grads:
            return None
        return _reduce(tensors[site.key] * grads[site.key], site.dim, lambda t: t)

    return channel_scores(group, gw).square()


@CRITERIA.register("random", description="random scores (baseline)")
def random_scores(group, tensors, grads, generator):
    """Uniform random scores from the seeded generator."""
    return torch.rand(len(group.channels), generator=generator, dtype=torch.float64)


@CRITERIA.register(
    "wanda_sp",
    description="sum over the consumers' input columns of |W| x ||x|| (structured Wanda; needs data)",
    needs_inputs=True,
)
def wanda_structured(group, tensors, norms, generator):
    """Activation-aware: each channel scores ``sum_i |W_ij| * ||X_j||_2`` over the input columns ``j`` it occupies
    in every Linear layer that reads it (Wanda's weight-times-input-norm, Sun et al. 2024, summed per channel as
    Wanda-sp in An et al., "Fluctuation-based Adaptive Structured Pruning", AAAI 2024). A head scores the output
    projection columns it owns, an MLP neuron its column of the down projection. Groups with no Linear consumer
    fall back to ``l2``."""
    if norms is None:
        raise ValueError("wanda_sp needs the input norms of the consumer layers")

    def per_index(site: Site):
        if site.role != "in" or site.tensor != "weight" or site.module not in norms or site.dim != 1:
            return None
        w = tensors[site.key].detach().float()  # (out, in)
        return w.abs().sum(0).double() * norms[site.module].double()  # (in,)

    scores = channel_scores(group, per_index)
    if not bool(scores.abs().sum() > 0):
        log.debug("group %s has no Linear consumer with input statistics; wanda_sp falls back to l2", group.name)
        return l2_norm(group, tensors, None, generator)
    return scores
