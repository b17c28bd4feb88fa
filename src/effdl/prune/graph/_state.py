"""The analysis state: the channel labels each captured tensor carries, and how labels are united and pinned.

A tensor's labels are an integer array over some of its axes (``Info.axes``): entry ``arr[i, j]`` is the label of
every element whose index on those axes is ``(i, j)``; the labels are constant along the other axes. A linear
layer's output has one labelled axis (its neurons). Splitting that axis into heads (``view(b, t, h, d)``) gives a
two-axis array; an attention contraction over ``d`` then unites the labels of each head, which makes the head the
removable unit.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

import numpy as np

from effdl.prune.graph._model import Site

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Info:
    """Labels of a tensor: ``arr`` over the tensor axes ``axes`` (ascending), constant along the other axes."""

    axes: tuple[int, ...]
    arr: np.ndarray

    @property
    def labels(self) -> list[int]:
        """Every label, flattened."""
        return [int(v) for v in self.arr.reshape(-1)]

    def shifted(self, offset: int) -> Info:
        return Info(tuple(a + offset for a in self.axes), self.arr)


@dataclasses.dataclass(frozen=True)
class ParamView:
    """A tensor that is a parameter or buffer (or a view of one): ``dims[axis]`` is the parameter dimension an axis
    of this tensor runs along (None for an axis the view added)."""

    key: str
    dims: tuple[int | None, ...]


@dataclasses.dataclass
class Binding:
    """An ``int`` module attribute used as the size of an axis; ``labels[i]``: the labels of the slice at index i."""

    module: str
    attr: str
    old: int
    labels: list[list[int]]


class State:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.pin_reason: dict[int, str] = {}
        self.uses: list[tuple[Site, np.ndarray, np.ndarray]] = []  # (site, labels, indices): flat int64 arrays
        self.producer: list[str] = []  # label -> producing module (for messages and grouping)
        self.heads: set[int] = set()  # labels united as blocks by an attention-like contraction
        self.grids: list[tuple[np.ndarray, int, str]] = []  # (labels, leading split axes, where): units are slices
        self.bindings: list[Binding] = []

    # union-find over labels
    def new(self, n: int | tuple[int, ...], *, producer: str, pin: str | None = None) -> np.ndarray:
        shape = (n,) if isinstance(n, int) else n
        count = int(np.prod(shape)) if shape else 1
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.producer.extend([producer] * count)
        if pin:
            self.pin_reason.update(dict.fromkeys(range(start, start + count), pin))
        return np.arange(start, start + count, dtype=np.int64).reshape(shape)

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def union_arrays(self, a: np.ndarray, b: np.ndarray) -> None:
        """Unites ``a`` and ``b`` elementwise (broadcasting)."""
        a, b = np.broadcast_arrays(a, b)
        for x, y in zip(a.reshape(-1).tolist(), b.reshape(-1).tolist(), strict=True):
            if x != y:
                self.union(x, y)

    def collapse(self, arr: np.ndarray, axis: int, *, heads: bool = False) -> np.ndarray:
        """Unites the labels along ``axis`` (every slice across it becomes one unit) and drops the axis."""
        moved = np.moveaxis(arr, axis, -1)
        for row in moved.reshape(-1, moved.shape[-1]).tolist():
            for lab in row[1:]:
                self.union(row[0], lab)
            if heads:
                self.heads.update(row)
        return moved[..., 0]

    def pin(self, labels: Iterable[int] | np.ndarray, reason: str) -> None:
        if isinstance(labels, np.ndarray):
            labels = labels.reshape(-1).tolist()
        for lab in labels:
            self.pin_reason.setdefault(int(lab), reason)

    def use(self, labels: np.ndarray, site: Site, width: int = 1) -> None:
        """Records that the labels along the last axis of ``labels`` occupy indices ``i*width .. i*width+width-1``
        of ``site`` (labels along other axes share the same indices, which unites them)."""
        arr = np.asarray(labels, dtype=np.int64)
        rows = arr.reshape(-1, arr.shape[-1]) if arr.ndim else arr.reshape(1, 1)
        labs = np.repeat(rows, width, axis=1).reshape(-1)
        idx = np.tile(np.arange(rows.shape[1] * width, dtype=np.int64), rows.shape[0])
        self.uses.append((site, labs, idx))
