"""Small formatting helpers shared by every front end (no imports beyond the standard library)."""

from __future__ import annotations

from decimal import Decimal

__all__ = ["format_cost", "human_size"]


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


def format_cost(cost: Decimal | None, source: str = "computed") -> str:
    """A call's cost as shown to people: ``$0`` for local and free, six decimals under a
    cent, ``cost unknown`` when there is no price."""
    if cost is None:
        return "cost unknown"
    if source == "local" or (cost == 0 and source != "provider"):
        return "$0"
    if cost < Decimal("0.01"):
        return f"${cost:.6f}".rstrip("0")
    return f"${cost:.4f}"
