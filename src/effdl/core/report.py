"""The machine-readable report every effdl command writes as ``report.json`` (schema in ``report.schema.json``,
documented in docs/report.md). Bump ``REPORT_SCHEMA_VERSION``'s major number on any incompatible change."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from effdl._version import __version__
from effdl.core.io import atomic_write_json
from effdl.core.table import format_table, human_bytes, human_count

__all__ = ["REPORT_SCHEMA_VERSION", "ModelSummary", "Report", "report_schema"]

REPORT_SCHEMA = "effdl.report"
REPORT_SCHEMA_VERSION = "1.0"


@dataclasses.dataclass
class ModelSummary:
    """The headline figures of one model: what a before/after comparison shows.

    Example:
        >>> ModelSummary(params=10, macs=100, size_bytes=40).to_dict()["macs"]
        100
    """

    params: int
    macs: int
    size_bytes: int
    nonzero_params: int | None = None
    sparse_macs: int | None = None
    accuracy: float | None = None
    loss: float | None = None
    perplexity: float | None = None
    peak_memory_bytes: int | None = None
    latency_ms: float | None = None
    latency_iqr_ms: float | None = None
    batch_size: int | None = None
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the report schema's ``summary`` shape."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSummary:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (newer minor versions may add some)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclasses.dataclass
class Report:
    """What a command did: the model and dataset, the final model's summary, and for transforms the summaries
    before and after, plus free-form details (config, per-layer profile, artifact paths).

    Example:
        >>> r = Report(command="train", model="mlp", dataset="mnist1d",
        ...            summary=ModelSummary(params=10, macs=10, size_bytes=40, accuracy=0.5))
        >>> r.to_dict()["schema_version"]
        '1.0'
    """

    command: str
    model: str | None = None
    dataset: str | None = None
    summary: ModelSummary | None = None
    before: ModelSummary | None = None
    after: ModelSummary | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document written as ``report.json``."""
        return {
            "schema": REPORT_SCHEMA,
            "schema_version": REPORT_SCHEMA_VERSION,
            "effdl_version": __version__,
            "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": self.command,
            "model": self.model,
            "dataset": self.dataset,
            "summary": None if self.summary is None else self.summary.to_dict(),
            "before": None if self.before is None else self.before.to_dict(),
            "after": None if self.after is None else self.after.to_dict(),
            "config": self.config,
            "details": self.details,
            "artifacts": self.artifacts,
        }

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Writes ``report.json`` into ``out_dir`` atomically and returns its path."""
        return atomic_write_json(Path(out_dir) / "report.json", self.to_dict())

    def to_table(self) -> str:
        """The summaries as a table: one column for a plain result, before/after/ratio columns for a transform."""
        cols = [("before", self.before), ("after", self.after)] if self.before or self.after else []
        if not cols and self.summary is not None:
            cols = [("value", self.summary)]
        rows = []
        for key, label, fmt in _SUMMARY_ROWS:
            values = [getattr(s, key) if s is not None else None for _, s in cols]
            if all(v is None for v in values):
                continue
            row = [label, *(fmt(v) if v is not None else "-" for v in values)]
            if len(cols) == 2 and None not in values and values[1]:
                row.append(f"{values[0] / values[1]:.2f}x")
            elif len(cols) == 2:
                row.append("-")
            rows.append(row)
        headers = ["metric", *(c for c, _ in cols)] + (["before/after"] if len(cols) == 2 else [])
        return format_table(rows, headers, align="l" + "r" * (len(headers) - 1))


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


_SUMMARY_ROWS = [
    ("accuracy", "test accuracy", _pct),
    ("loss", "test loss", lambda v: f"{v:.4f}"),
    ("perplexity", "test perplexity", lambda v: f"{v:.3f}"),
    ("params", "parameters", human_count),
    ("nonzero_params", "non-zero parameters", human_count),
    ("macs", "MACs / example", human_count),
    ("sparse_macs", "sparse MACs / example", human_count),
    ("size_bytes", "serialized size", human_bytes),
    ("peak_memory_bytes", "peak forward memory", human_bytes),
    ("latency_ms", "latency (median)", lambda v: f"{v:.3f} ms"),
    ("latency_iqr_ms", "latency IQR", lambda v: f"{v:.3f} ms"),
    ("batch_size", "batch size", str),
    ("threads", "threads", str),
]


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every ``report.json`` validates against.

    Example:
        >>> report_schema()["properties"]["schema"]["const"]
        'effdl.report'
    """
    text = resources.files("effdl.core").joinpath("report.schema.json").read_text(encoding="utf-8")
    return json.loads(text)
