"""How well proxies rank architectures: Kendall tau and Spearman rho of each proxy's scores against trained
accuracies from a ground-truth file, overall and within MAC bands, with a table and scatter plots."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effdl.core.errors import CheckpointError, ConfigError
from effdl.core.plot import saved_figure
from effdl.core.table import format_table
from effdl.nas.proxies import PROXIES, score_model
from effdl.nas.space import get_space

__all__ = ["GroundTruth", "ProxyEvaluation", "evaluate_proxies", "kendall_tau", "load_ground_truth", "spearman_rho"]

log = logging.getLogger(__name__)

DEFAULT_GROUND_TRUTH = "mnist1d_cnn_v1.json"


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b rank correlation (scipy).

    Example:
        >>> round(kendall_tau([1, 2, 3, 4], [10, 20, 40, 30]), 6)
        0.666667
    """
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (scipy).

    Example:
        >>> round(spearman_rho([1, 2, 3, 4], [10, 20, 40, 30]), 6)
        0.8
    """
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


@dataclasses.dataclass
class GroundTruth:
    """Trained accuracies of architectures of one search space (see ``benchmarks/nas_ground_truth.py``)."""

    name: str
    space: str
    records: list[dict[str, Any]]
    meta: dict[str, Any]

    def column(self, key: str) -> np.ndarray:
        """One field of every record as an array, e.g. ``"test_accuracy"`` or ``"macs"``."""
        return np.asarray([r[key] for r in self.records], dtype=float)


def load_ground_truth(path: str | os.PathLike | None = None) -> GroundTruth:
    """Reads a ground-truth file (default: the one shipped with effdl, ``mnist1d_cnn_v1``).

    Example:
        >>> gt = load_ground_truth()
        >>> gt.space, len(gt.records) >= 200
        ('mnist1d_cnn', True)
    """
    try:
        if path is None:
            text = resources.files("effdl.nas").joinpath("data", DEFAULT_GROUND_TRUTH).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        doc = json.loads(text)
        records = doc["architectures"]
        missing = [k for r in records for k in ("arch", "test_accuracy", "macs") if k not in r]
        if missing:
            raise KeyError(f"records lack {sorted(set(missing))}")
        meta = {k: v for k, v in doc.items() if k != "architectures"}
        return GroundTruth(name=doc["name"], space=doc["space"], records=records, meta=meta)
    except FileNotFoundError as exc:
        raise CheckpointError(f"no ground-truth file at {path}; run benchmarks/nas_ground_truth.py") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path or DEFAULT_GROUND_TRUTH} is not a ground-truth file ({exc!r})") from exc


@dataclasses.dataclass
class ProxyEvaluation:
    """Scores of every proxy on every architecture and their rank correlations with the trained accuracy."""

    ground_truth: GroundTruth
    scores: dict[str, list[float]]
    bands: list[tuple[float, float]]
    seconds: dict[str, float]

    def correlations(self) -> dict[str, dict[str, Any]]:
        """``{proxy: {"kendall_tau", "spearman_rho", "bands": [{"macs": [lo, hi], "kendall_tau", ...}]}}``."""
        acc, macs = self.ground_truth.column("test_accuracy"), self.ground_truth.column("macs")
        out = {}
        for name, values in self.scores.items():
            s = np.asarray(values, dtype=float)
            ok = np.isfinite(s)
            entry: dict[str, Any] = {
                "kendall_tau": kendall_tau(s[ok], acc[ok]),
                "spearman_rho": spearman_rho(s[ok], acc[ok]),
                "failed": int((~ok).sum()),
                "seconds_per_arch": self.seconds[name] / max(len(s), 1),
                "bands": [],
            }
            for lo, hi in self.bands:
                m = ok & (macs >= lo) & (macs <= hi)
                entry["bands"].append(
                    {
                        "macs": [lo, hi],
                        "count": int(m.sum()),
                        "kendall_tau": kendall_tau(s[m], acc[m]),
                        "spearman_rho": spearman_rho(s[m], acc[m]),
                    }
                )
            out[name] = entry
        return out

    def to_table(self) -> str:
        """Proxies by Kendall tau, with Spearman rho and tau within each MAC band."""
        corr = self.correlations()
        rows = []
        for name in sorted(corr, key=lambda n: -_finite(corr[n]["kendall_tau"])):
            c = corr[name]
            bands = [f"{b['kendall_tau']:.3f}" for b in c["bands"]]
            ms = f"{1000 * c['seconds_per_arch']:.1f}"
            rows.append([name, f"{c['kendall_tau']:.3f}", f"{c['spearman_rho']:.3f}", *bands, ms])
        bands = [f"tau, MACs {_k(lo)}-{_k(hi)}" for lo, hi in self.bands]
        return format_table(rows, ["proxy", "Kendall tau", "Spearman rho", *bands, "ms / arch"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the correlations, the bands, and every score."""
        return {
            "ground_truth": self.ground_truth.name,
            "architectures": len(self.ground_truth.records),
            "correlations": self.correlations(),
            "bands": [list(b) for b in self.bands],
            "scores": {k: [None if not math.isfinite(v) else v for v in vs] for k, vs in self.scores.items()},
        }

    def plot(self, path: str | os.PathLike) -> Path:
        """Scatter plots of each proxy's score (x, rank-transformed) against test accuracy (y)."""
        acc = 100 * self.ground_truth.column("test_accuracy")
        macs = self.ground_truth.column("macs")
        corr = self.correlations()
        names = list(self.scores)
        cols = 3
        rows = -(-len(names) // cols)
        with saved_figure(path, size=(4 * cols, 3.3 * rows), nrows=rows, ncols=cols, squeeze=False) as (_, axes):
            for ax, name in zip(axes.flat, names, strict=False):
                s = np.asarray(self.scores[name], dtype=float)
                ok = np.isfinite(s)
                rank = np.argsort(np.argsort(s[ok])) / max(ok.sum() - 1, 1)
                pts = ax.scatter(rank, acc[ok], c=np.log10(macs[ok]), s=8, cmap="viridis")
                ax.set_title(f"{name}: tau {corr[name]['kendall_tau']:.2f}", fontsize=10)
                ax.set_xlabel("proxy score (rank)")
                ax.set_ylabel("test accuracy (%)")
            for ax in list(axes.flat)[len(names) :]:
                ax.axis("off")
            last = list(axes.flat)[len(names) - 1]
            last.figure.colorbar(pts, ax=last, label="log10 MACs")
        return Path(path)


def _finite(v: float) -> float:
    return v if math.isfinite(v) else -math.inf


def _k(v: float) -> str:
    return f"{v / 1e3:.0f}K" if v < 1e6 else f"{v / 1e6:.1f}M"


def evaluate_proxies(
    ground_truth: GroundTruth,
    batches: Sequence[tuple],
    *,
    proxies: Sequence[str] | None = None,
    num_bands: int = 3,
    seed: int = 0,
    progress: bool = False,
) -> ProxyEvaluation:
    """Scores every architecture of ``ground_truth`` with every proxy at the initialization it was trained from
    (weights seeded with ``seed`` before building) and returns the rank correlations; MAC bands are quantiles.

    Example:
        >>> gt = load_ground_truth()
        >>> gt.records = gt.records[:6]
        >>> batches = [(torch.randn(16, 1, 40), torch.randint(0, 10, (16,))) for _ in range(2)]
        >>> ev = evaluate_proxies(gt, batches, proxies=["params", "zico"], num_bands=1)
        >>> sorted(ev.correlations())
        ['params', 'zico']
    """
    names = list(proxies or PROXIES.names())
    for name in names:
        PROXIES.entry(name)  # unknown names fail before any work, listing the valid ones
    if num_bands < 1:
        raise ConfigError(f"num_bands must be >= 1, got {num_bands}")
    space = get_space(ground_truth.space)
    macs = ground_truth.column("macs")
    edges = np.quantile(macs, np.linspace(0, 1, num_bands + 1))
    bands = [(float(edges[i]), float(edges[i + 1])) for i in range(num_bands)]
    scores = {n: [] for n in names}
    seconds = dict.fromkeys(names, 0.0)
    records: Any = ground_truth.records
    if progress:
        from tqdm.auto import tqdm

        records = tqdm(records, desc="scoring architectures", unit="arch")
    for rec in records:
        torch.manual_seed(seed)
        model = space.build(rec["arch"])
        for n in names:
            t0 = time.perf_counter()
            try:
                value = score_model(model, batches, n)
            except (RuntimeError, ValueError) as exc:  # e.g. a singular NASWOT kernel
                log.warning("%s failed on %s: %s", n, rec["arch"], exc)
                value = float("nan")
            seconds[n] += time.perf_counter() - t0
            scores[n].append(value)
    return ProxyEvaluation(ground_truth=ground_truth, scores=scores, bands=bands, seconds=seconds)
