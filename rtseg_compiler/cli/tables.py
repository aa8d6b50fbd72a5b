"""Plain-text tables for the terminal: the layout ``shapes``, ``flops --per-layer`` and ``bench`` print.

Columns are padded to their widest cell and separated by two spaces; a dashed rule follows the header.
Numbers go in right-aligned columns (``right``), names in left-aligned ones.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["dilation_text", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: set[int] = frozenset()) -> str:
    """The rows under their headers; ``right`` holds the indices of right-aligned columns."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, row in enumerate(cells):
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def dilation_text(d: Sequence[int]) -> str:
    """(2, 2) -> '2'; (1, 2) -> '1x2'."""
    return str(d[0]) if d[0] == d[1] else f"{d[0]}x{d[1]}"
