"""Small formatting helpers shared by every front end (no imports beyond the standard library)."""

from __future__ import annotations

__all__ = ["human_size"]


def human_size(nbytes: float | None) -> str:
    """``1536`` -> ``1.5 KiB``; ``None`` -> ``-``; a negative count -> ``unknown``."""
    if nbytes is None:
        return "-"
    if nbytes < 0:
        return "unknown"
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover
