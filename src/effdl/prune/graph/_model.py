"""The data model of a dependency analysis: sites, channels, groups and the graph."""

from __future__ import annotations

import dataclasses
import logging

from effdl.core.config import name_matches
from effdl.core.errors import UnsupportedError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Site:
    """One axis of one parameter or buffer that holds channels.

    ``role`` says what the axis is: ``"out"`` a producer's filters/neurons, ``"in"`` a consumer's input columns,
    ``"norm"`` a per-channel scale/shift/statistic, ``"dw"`` a depthwise filter (it follows its input channel).
    """

    module: str
    tensor: str
    dim: int
    role: str

    @property
    def key(self) -> str:
        """``module.tensor`` as in the state_dict."""
        return f"{self.module}.{self.tensor}" if self.module else self.tensor


@dataclasses.dataclass
class Channel:
    """One removable unit: the indices it occupies in every site (a channel can span several indices of a site,
    e.g. the features a flattened channel becomes)."""

    id: int
    occurrences: dict[Site, list[int]]

    def indices(self, site: Site) -> list[int]:
        """Indices of this channel along ``site``."""
        return self.occurrences.get(site, [])


@dataclasses.dataclass
class Group:
    """Channels produced by the same set of layers (e.g. one conv's filters, or a residual stage's channels shared
    by every block that adds into it). Ratios and rankings apply per group.

    Attributes:
        name: the first producing module in graph order (``"blocks.0.attn"`` + ``".heads"`` for heads).
        producers: names of the modules whose outputs these channels are.
        kind: ``"channels"`` or ``"heads"``.
        channels: the removable units, in index order of the first producer.
        folds: producer -> the BatchNorm that directly follows it (and would be folded into it for inference).
    """

    name: str
    producers: tuple[str, ...]
    kind: str
    channels: list[Channel]
    folds: dict[str, str] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.channels)

    def sites(self) -> list[Site]:
        """Every site any channel of the group occupies, in a stable order."""
        seen: dict[Site, None] = {}
        for ch in self.channels:
            for site in ch.occurrences:
                seen.setdefault(site, None)
        return list(seen)

    def matches(self, pattern: str) -> bool:
        """Whether ``pattern`` (a module name or a regular expression) names this group or one of its producers."""
        return any(name_matches(n, pattern) for n in (self.name, *self.producers))


@dataclasses.dataclass
class SizeBinding:
    """A module attribute the forward uses as the size of a channel axis (``num_heads`` in ``view(b, t,
    self.num_heads, d)``): ``channels[i]`` are the channel ids in the slice at index ``i`` of that axis, so the
    attribute's new value is the number of indices where some channel stays."""

    module: str
    attr: str
    old: int
    channels: list[list[int]]


@dataclasses.dataclass
class DependencyGraph:
    """The result of :func:`build_dependency_graph`: prunable groups, and why the other channels are pinned.

    Attributes:
        groups: prunable groups, in graph order.
        pinned: producer module -> reason, for modules whose outputs cannot be pruned.
        modules: every module name that took part.
        bindings: module attributes that hard-code the size of a channel axis.
        aliases: state_dict key -> every key naming the same tensor (tied weights).
    """

    groups: list[Group]
    pinned: dict[str, str]
    modules: list[str]
    bindings: list[SizeBinding] = dataclasses.field(default_factory=list)
    aliases: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def group(self, name: str) -> Group:
        """The group named ``name`` (or produced by module ``name``)."""
        for g in self.groups:
            if g.name == name or name in g.producers:
                return g
        if name in self.pinned:
            raise UnsupportedError(f"{name!r} cannot be pruned: {self.pinned[name]}")
        raise UnsupportedError(
            f"no prunable group named {name!r}; prunable groups: {', '.join(g.name for g in self.groups) or '(none)'}"
        )

    def find(self, pattern: str) -> list[Group]:
        """Groups matching a module name or regular expression."""
        return [g for g in self.groups if g.matches(pattern)]
