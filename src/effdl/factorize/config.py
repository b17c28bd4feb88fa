"""The factorization config: which layers, which decomposition, and how the rank is chosen."""

from __future__ import annotations

import dataclasses
from typing import Any

from effdl.core.config import Config, check_choice, check_range, rename_fields
from effdl.core.errors import ConfigError

__all__ = ["LowRankConfig"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LowRankConfig(Config):
    """Replace Linear and Conv layers by low-rank products.

    Args:
        selector: how ranks are chosen, a name in :data:`~effdl.factorize.RANK_SELECTORS`: ``energy`` (the smallest
            rank keeping ``energy`` of the squared singular values), ``fixed`` (``rank``, capped at full rank) or
            ``keep`` (the largest rank whose layer keeps at most ``keep`` of the original parameters or MACs).
        energy: share of squared singular values to keep (``energy``).
        rank: the rank (``fixed``).
        keep: share of parameters or MACs kept (``keep``), per layer or over all factorized layers together (what
            pruning calls ``ratio`` is the share removed; this is the share kept).
        scope: ``layer`` (each layer meets the budget) or ``global`` (the layers together meet it, with one energy
            threshold for all, so layers with a fast-decaying spectrum give up more); ``keep`` only.
        target: ``params`` or ``macs``, what ``keep`` counts.
        conv: ``channel`` (a conv with r filters then a 1x1 conv) or ``tucker2`` (1x1, core conv, 1x1).
        layers: names or regexes of the layers to factorize (empty: every Linear and ungrouped Conv).
        ignore: names or regexes to leave alone (e.g. the classifier).
        per_layer: explicit ranks by name or regex, overriding the selector.
        only_if_smaller: leave a layer dense when its factorized form would not have fewer parameters.

    Example:
        >>> LowRankConfig(selector="keep", keep=0.5).to_dict()["keep"]
        0.5
        >>> LowRankConfig(selector="fixed")
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: selector='fixed' needs rank=R (an integer >= 1), e.g. rank=8
    """

    selector: str = "energy"
    energy: float = 0.9
    rank: int | None = None
    config_version = 2  # version 1 called `keep` "ratio" (and its selector "ratio")
    keep: float = 0.5
    scope: str = "layer"
    target: str = "params"
    conv: str = "channel"
    layers: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    per_layer: dict[str, int] = dataclasses.field(default_factory=dict)
    only_if_smaller: bool = True

    def validate(self) -> None:
        from effdl.factorize.ranks import RANK_SELECTORS

        if self.selector not in RANK_SELECTORS:
            RANK_SELECTORS.get(self.selector, allow_callable=False)  # raises with the valid names
        check_range("energy", self.energy, 0.0, 1.0, low_open=True, hint="use energy=0.9 to keep 90%")
        check_range("keep", self.keep, 0.0, 1.0, low_open=True, hint="use keep=0.5 to halve the layer")
        check_choice("scope", self.scope, ("layer", "global"))
        check_choice("target", self.target, ("params", "macs"))
        check_choice("conv", self.conv, ("channel", "tucker2"))
        if self.selector == "fixed" and (self.rank is None or isinstance(self.rank, bool) or self.rank < 1):
            raise ConfigError("selector='fixed' needs rank=R (an integer >= 1), e.g. rank=8")
        if self.scope == "global" and self.selector != "keep":
            raise ConfigError(f"scope='global' applies to selector='keep', got selector={self.selector!r}")
        for pattern, rank in self.per_layer.items():
            if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                raise ConfigError(f"per_layer[{pattern!r}] must be a rank >= 1, got {rank!r}")

    def describe(self) -> str:
        return f"factorize {self.selector}"

    @classmethod
    def upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        data = rename_fields(cls, data, {"ratio": "keep"})
        if data.get("selector") == "ratio":
            data["selector"] = "keep"
        return data
