"""Plain-text tables for reports and the CLI (no third-party dependency)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["format_table", "human_bytes", "human_count"]


def human_count(n: float) -> str:
    """Compact count: 1234 -> '1.23K', 5.6e6 -> '5.60M'.

    Example:
        >>> human_count(23498), human_count(999), human_count(5.6e9)
        ('23.50K', '999', '5.60G')
    """
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.3g}"


def human_bytes(n: float) -> str:
    """Compact byte count in binary units.

    Example:
        >>> human_bytes(2048), human_bytes(3 * 2**20)
        ('2.0 KiB', '3.0 MiB')
    """
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], *, align: str | None = None) -> str:
    """Renders rows as a Markdown-compatible table (readable in a terminal too).

    Args:
        rows: one sequence of cells per row; cells are turned into strings.
        headers: column titles.
        align: one letter per column, ``l`` or ``r``; by default numbers align right.

    Example:
        >>> print(format_table([["conv", 192]], ["layer", "params"]))
        | layer | params |
        |:------|-------:|
        | conv  |    192 |
    """
    cells = [[str(c) for c in row] for row in rows]
    if align is None:
        align = "".join("r" if rows and _is_number(rows[0][i]) else "l" for i in range(len(headers)))
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(values, widths, align, strict=True)]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            (":" + "-" * (w + 1)) if a == "l" else ("-" * (w + 1) + ":") for w, a in zip(widths, align, strict=True)
        )
        + "|"
    )
    return "\n".join([line(list(headers)), rule, *(line(r) for r in cells)])


def _is_number(value: Any) -> bool:
    if isinstance(value, int | float):
        return True
    try:
        float(str(value).rstrip("%KMGiB ").replace(",", ""))
    except ValueError:
        return False
    return True
