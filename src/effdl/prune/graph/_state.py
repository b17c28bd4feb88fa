"""The tracing state: the channel labels each traced tensor carries, and how labels are united and pinned."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence

from torch import nn

from effdl.prune.graph._model import Site

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Info:
    """Labels of a tensor's channel dimension ``dim``."""

    dim: int
    labels: list[int]


class _State:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.parent: list[int] = []
        self.pin_reason: dict[int, str] = {}
        self.uses: dict[int, list[tuple[Site, int]]] = {}
        self.producer: dict[int, str] = {}  # label -> producing module (for messages and grouping)
        self.kind: dict[int, str] = {}
        self.order: list[int] = []  # labels in creation order

    # union-find over labels
    def new(self, n: int, *, producer: str, kind: str = "channels", pin: str | None = None) -> list[int]:
        labels = []
        for _ in range(n):
            lab = len(self.parent)
            self.parent.append(lab)
            self.producer[lab] = producer
            self.kind[lab] = kind
            self.order.append(lab)
            if pin:
                self.pin_reason[lab] = pin
            labels.append(lab)
        return labels

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def pin(self, labels: Iterable[int], reason: str) -> None:
        for lab in labels:
            self.pin_reason.setdefault(lab, reason)

    def use(self, labels: Sequence[int], site: Site, width: int = 1) -> None:
        """Records that label ``labels[i]`` occupies indices ``i*width .. i*width+width-1`` of ``site``."""
        for i, lab in enumerate(labels):
            for j in range(width):
                self.uses.setdefault(lab, []).append((site, i * width + j))
