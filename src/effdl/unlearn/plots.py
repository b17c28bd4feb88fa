"""Pictures of a study: reconstruction grids of forget and retain images per model, and the retain/forget
trade-off of the paper's method against gradient ascent."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effdl.core.io import atomic_write_bytes

__all__ = ["plot_grids", "plot_tradeoff"]


Draw = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def plot_grids(
    models: dict[str, nn.Module], sets: dict[str, tuple[torch.Tensor, torch.Tensor]], path: Path, reconstruct: Draw,
    *, per_set: int = 8,
) -> Path:  # fmt: skip
    """One row per (model, set): the first ``per_set`` images of each set as the model draws them, under a row of
    the originals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{part}: real", x[:per_set]) for part, (x, _) in sets.items()]
    for part, (x, _) in sets.items():
        rows += [(f"{part}: {name}", reconstruct(m, x[:per_set])) for name, m in models.items()]
    fig, axes = plt.subplots(len(rows), per_set, figsize=(per_set * 0.9, len(rows) * 1.0), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(per_set):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        axes[r][0].set_title(label, fontsize=7, loc="left")
    fig.tight_layout()
    return _save(fig, path)


def plot_tradeoff(original: dict[str, Any], sweep: list[dict[str, Any]], path: Path) -> Path:
    """Retain-class accuracy against forget-class accuracy of the judge on the drawings, one curve per method (a
    curve up and to the left dominates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for method, marker in (("noise-target", "o"), ("gradient-ascent", "s")):
        pts = [r for r in sweep if r["method"] == method]
        key = "alpha" if method == "noise-target" else "ascent_steps"
        ax.plot([100 * r["forget_accuracy"] for r in pts], [100 * r["retain_accuracy"] for r in pts], marker=marker,
                label=f"{method} (over {key})")  # fmt: skip
        for r in pts:
            ax.annotate(f"{r[key]:g}", (100 * r["forget_accuracy"], 100 * r["retain_accuracy"]), fontsize=7)
    ax.scatter([100 * original["forget_accuracy"]], [100 * original["retain_accuracy"]], c="k", marker="*",
               label="original", zorder=3)  # fmt: skip
    ax.set_xlabel("judge accuracy on forget-class drawings (%)")
    ax.set_ylabel("judge accuracy on retain-class drawings (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=120, format="png")
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
