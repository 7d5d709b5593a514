"""Spend and tokens from the usage ledger, for ``jupyter byok usage`` and ``%byok usage``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .render import table

__all__ = ["export_usage", "render_usage", "usage_frame", "usage_summary"]


def usage_summary(
    by: list[str],
    since: Any = "30d",
    until: Any = None,
    scope: str | None = None,
    **filters: Any,
) -> dict[str, Any]:
    """Grouped sums since ``since``: ``{"by", "since", "total_usd", "groups"}``.

    ``filters``: ``provider``, ``model``, ``feature`` (exact values). ``total_usd`` is an
    exact ``Decimal``; each group is one dict from :meth:`Ledger.summary`. ``scope``: a
    shared ledger's ``me``, ``team`` or ``all``.
    """
    from ..ledger import default_ledger, scope_args

    ledger = default_ledger()
    filters.update(scope_args(ledger, scope))
    groups = ledger.summary(by, since=since, until=until, **filters)
    total: Decimal = ledger.spend(since=since, until=until, **filters)
    return {"by": list(by), "since": since, "total_usd": total, "groups": groups}


def export_usage(path: str, since: Any = "30d", until: Any = None, **filters: Any) -> str:
    """Write the matching rows as CSV or Parquet (by the file's suffix); returns the path."""
    from ..ledger import export

    return str(export(path, since=since, until=until, **filters))


def render_usage(summary: dict[str, Any]) -> str:
    """The table ``jupyter byok usage`` prints, with the total below it."""
    by, groups, since = summary["by"], summary["groups"], summary["since"]
    if not groups:
        return f"no calls recorded since {since}"
    rows: list[tuple[str, ...]] = [
        (*(b.upper() for b in by), "CALLS", "INPUT", "CACHED", "OUTPUT", "COST USD")
    ]
    for g in groups:
        unknown = f" (+{g['unknown_cost_calls']} unpriced)" if g["unknown_cost_calls"] else ""
        rows.append(
            (
                *(str(g[b] if g[b] is not None else "-") for b in by),
                str(g["calls"]),
                f"{g['input_tokens']:,}",
                f"{g['cached_input_tokens']:,}",
                f"{g['output_tokens']:,}",
                f"{float(g['cost_usd_exact']):.6f}{unknown}",
            )
        )
    return f"{table(rows)}\ntotal since {since}: ${summary['total_usd']}"


def usage_frame(since: Any = "30d", until: Any = None, scope: str | None = None) -> Any:
    """The matching ledger rows as a pandas DataFrame (for charts)."""
    from ..ledger import usage

    return usage(since=since, until=until, scope=scope)
