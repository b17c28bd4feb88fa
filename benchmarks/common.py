"""Shared helpers of the benchmark scripts: the environment line and writing a results table beside them."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def environment() -> str:
    """One line describing where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}"


def write_results(name: str, title: str, notes: list[str], table: str, records: list[dict[str, Any]]) -> str:
    """Writes results/NAME.md (title, notes, table) and results/NAME.json (the raw records); returns the text."""
    env = environment()
    text = "\n".join([f"# {title}", "", *notes, f"Environment: {env}.", "", table, ""])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps({"environment": env, "results": records}, indent=2) + "\n")
    return text
