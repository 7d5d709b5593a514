"""Plain-text rendering shared by ``jupyter byok`` and ``%byok``: the one table layout."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["table"]


def table(rows: Sequence[Sequence[str]], *, last_free: bool = False) -> str:
    """Rows of cells as left-aligned columns two spaces apart (the first row is the header).

    ``last_free``: the last column is not padded or measured (a long path at the end).
    """
    if not rows:
        return ""
    measured = len(rows[0]) - (1 if last_free else 0)
    widths = [max(len(r[c]) for r in rows) for c in range(measured)]
    lines = []
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row[:measured], widths, strict=True)]
        cells.extend(row[measured:])
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
