"""Saving matplotlib figures the same way everywhere: headless backend, folders created, written atomically.
matplotlib is imported only when a figure is made, so ``import effdl`` stays light."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from effdl.core.errors import EffdlError
from effdl.core.io import publish

__all__ = ["saved_figure"]


@contextmanager
def saved_figure(path: str | os.PathLike, *, size: tuple[float, float] = (7, 4.5), **layout: Any) -> Iterator[Any]:
    """Yields ``(fig, axes)`` from ``plt.subplots(**layout)`` (e.g. ``ncols=2``, ``sharex=True``) and saves the
    figure to ``path`` (PNG, 120 dpi) atomically on exit.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with saved_figure(f"{d}/a.png") as (fig, ax):
        ...         _ = ax.plot([0, 1], [1, 0])
        ...     os.path.getsize(f"{d}/a.png") > 0
        True
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise EffdlError("plots need matplotlib; install it with: pip install 'effdl[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(figsize=size, **layout)
    try:
        yield fig, axes
        fig.tight_layout()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
            publish(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    finally:
        plt.close(fig)
