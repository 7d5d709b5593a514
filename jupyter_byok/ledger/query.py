"""Reading the ledger in SQL: times, filters, and the sums behind spend, summaries and charts.

Whole days come from the daily rollup (``schema.fold_into_rollup``) plus the rows past its
watermark; filters on columns the rollup does not keep, partial days and hourly buckets read
the rows themselves. Every function here takes an open connection: the store decides how
it is opened and locked (:meth:`.store.Ledger.connection`).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from ..errors import ConfigError
from .schema import COLUMNS, DAY_OF_TS, DIMENSIONS, MEASURES, ROLLUP_DIMS, UPTO, from_pico

__all__ = ["Reader", "parse_time", "recent", "spend", "summary", "where"]

#: opens the ledger for reading (the store's :meth:`~.store.Ledger.connection`)
Reader = Callable[[], AbstractContextManager[sqlite3.Connection]]

# ------------------------------------------------------------------------------- times
_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")


def parse_time(value: Any, *, now: datetime | None = None) -> int | None:
    """``datetime``, ``date``, ISO string, epoch seconds, ``today``, ``yesterday``, ``month``,
    or ``7d``/``12h``/``30m``/``2w`` -> integer microseconds since the epoch (UTC).

    A time out of the calendar's range (``99999999999d``, ``nan``) is a ConfigError."""
    try:
        us = _parse_time(value, now)
        if us is not None and not -(2**63) < us < 2**63:  # SQLite's integers
            raise OverflowError
        return us
    except (OverflowError, ValueError):
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:37]}..."
        raise ConfigError(
            f"the time {shown} is out of range: use an ISO date such as 2026-11-01, "
            "'today', 'month' or a span such as '7d'"
        ) from None


def _parse_time(value: Any, now: datetime | None) -> int | None:
    if value is None:
        return None
    now = now or datetime.now(timezone.utc)
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.astimezone()  # naive means local time
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return round(float(value) * 1e6)
    elif isinstance(value, str):
        text = value.strip().lower()
        midnight = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        m = _RELATIVE.match(text)
        if text == "today":
            dt = midnight
        elif text == "yesterday":
            dt = midnight - timedelta(days=1)
        elif text == "month":
            dt = midnight.replace(day=1)
        elif m:
            n, unit = int(m.group(1)), m.group(2)
            span = {"m": timedelta(minutes=n), "h": timedelta(hours=n), "d": timedelta(days=n)}
            dt = now - span.get(unit, timedelta(weeks=n))
        else:
            try:
                dt = datetime.fromisoformat(value.strip())
            except ValueError:
                shown = repr(value) if len(value) <= 40 else f"{value[:37]!r}..."
                raise ConfigError(
                    f"cannot read the time {shown}: use an ISO date such as 2026-11-01, "
                    "'today', 'month' or a span such as '7d'"
                ) from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
    else:
        raise ConfigError(f"cannot use {value!r} as a time: give a datetime, a date or '7d'")
    return round(dt.timestamp() * 1e6)


_DAY_US = 86_400 * 1_000_000


def _day(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, timezone.utc).strftime("%Y-%m-%d")


def where(
    since: int | None, until: int | None, filters: dict[str, Any], allowed: Iterable[str]
) -> tuple[str, list[Any]]:
    allowed = set(allowed)
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    if until is not None:
        clauses.append("ts < ?")
        params.append(until)
    for name, value in filters.items():
        if value is None:
            continue
        if name not in allowed:
            raise ConfigError(
                f"cannot filter usage by {name!r}: use one of {', '.join(sorted(allowed))}"
            )
        if isinstance(value, list | tuple | set | frozenset):
            values = [str(v) for v in value]
            clauses.append(f"{name} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
        else:
            clauses.append(f"{name} = ?")
            params.append(str(value))
    return (" AND ".join(clauses) or "1"), params


_BUCKETS = {
    None: None,
    "day": "day",
    "week": "date(day, 'weekday 0', '-6 days')",
    "month": "substr(day, 1, 7) || '-01'",
}


def union(
    since: int | None, until: int | None, filters: dict[str, Any]
) -> tuple[str, list[Any]] | None:
    """Day-level rows from the rollup for whole days, plus raw rows for the rows past its
    watermark and for partial days at the edges.

    ``None`` when a filter needs a column the rollup does not keep.
    """
    if any(v is not None and k not in ROLLUP_DIMS for k, v in filters.items()):
        return None
    d0 = None if since is None else -(-since // _DAY_US) * _DAY_US  # first whole day
    d1 = None if until is None else (until // _DAY_US) * _DAY_US  # end of last whole day
    if d0 is not None and d1 is not None and d1 <= d0:
        return None
    fw, fparams = where(None, None, filters, ROLLUP_DIMS)
    rclauses, rparams = [fw], list(fparams)
    if d0 is not None:
        rclauses.append("day >= ?")
        rparams.append(_day(d0))
    if d1 is not None:
        rclauses.append("day < ?")
        rparams.append(_day(d1))
    cols = f"provider, model, feature, status, n, unknown_n, {', '.join(MEASURES)}"
    money = "search_credits, cost_pico, saved_pico"
    sql = f"SELECT day, {cols}, {money} FROM rollup WHERE {' AND '.join(rclauses)}"
    params: list[Any] = rparams
    edges = []
    if since is not None and d0 is not None and since < d0:
        edges.append((since, d0))
    if d1 is not None and until is not None and d1 < until:
        edges.append((d1, until))
    raw = (
        f" UNION ALL SELECT {DAY_OF_TS}, provider, model, feature, status, 1, "
        f"cost_pico IS NULL, {', '.join(MEASURES)}, search_credits, "
        "ifnull(cost_pico, 0), ifnull(saved_pico, 0) FROM attempts WHERE "
    )
    # whole days: the rows not folded into the rollup yet (at most about FOLD_EVERY)
    tw, tparams = where(d0, d1, filters, ROLLUP_DIMS)
    sql += f"{raw}rowid > {UPTO} AND {tw}"
    params += tparams
    for lo, hi in edges:  # partial days: every row
        ew, eparams = where(lo, hi, filters, ROLLUP_DIMS)
        sql += raw + ew
        params += eparams
    return sql, params


def spend(read: Reader, since: Any = None, until: Any = None, **filters: Any) -> Decimal:
    """Exact total cost (USD) of the matching attempts; unknown costs count as 0."""
    lo, hi = parse_time(since), parse_time(until)
    rolled = union(lo, hi, filters)
    with read() as conn:
        if rolled is not None:
            sql, params = rolled
            (total,) = conn.execute(f"SELECT sum(cost_pico) FROM ({sql})", params).fetchone()
        else:
            clause, params = where(lo, hi, filters, DIMENSIONS)
            (total,) = conn.execute(
                f"SELECT sum(cost_pico) FROM attempts WHERE {clause}", params
            ).fetchone()
    return from_pico(total)


def summary(
    read: Reader,
    by: list[str],
    since: Any = None,
    until: Any = None,
    bucket: str | None = None,
    **filters: Any,
) -> list[dict[str, Any]]:
    """Grouped sums (SQL ``GROUP BY``) for REST and charts: one dict per group.

    ``bucket`` is ``None``, ``hour``, ``day``, ``week`` or ``month`` (UTC); ``cost_usd``
    is a float for charts and ``cost_usd_exact`` the exact decimal string.
    """
    by = list(by)
    bad = [b for b in by if b not in DIMENSIONS]
    if bad or (bucket not in _BUCKETS and bucket != "hour"):
        raise ConfigError(
            f"cannot group usage by {bad[0] if bad else bucket!r}: group by "
            f"{', '.join(DIMENSIONS)} and bucket by hour, day, week or month"
        )
    lo, hi = parse_time(since), parse_time(until)
    rolled = None if bucket == "hour" or set(by) - set(ROLLUP_DIMS) else union(lo, hi, filters)
    if rolled is not None:
        source, params = rolled
        bexpr = _BUCKETS[bucket]
        n_expr, unknown_expr = "sum(n)", "sum(unknown_n)"
    else:
        clause, params = where(lo, hi, filters, DIMENSIONS)
        source = f"SELECT * FROM attempts WHERE {clause}"
        day = "strftime('%Y-%m-%d', ts / 1000000, 'unixepoch')"
        bexpr = {
            None: None,
            "hour": "strftime('%Y-%m-%dT%H:00:00Z', ts / 1000000, 'unixepoch')",
            "day": day,
            "week": f"date({day}, 'weekday 0', '-6 days')",
            "month": "strftime('%Y-%m-01', ts / 1000000, 'unixepoch')",
        }[bucket]
        n_expr, unknown_expr = "count(*)", "sum(cost_pico IS NULL)"
    keys = ([f"{bexpr} AS bucket"] if bexpr else []) + by
    names = (["bucket"] if bexpr else []) + by
    sums = ", ".join(f"sum({m})" for m in MEASURES)
    sql = (
        f"SELECT {', '.join([*keys, n_expr, unknown_expr])}, {sums}, sum(search_credits), "
        f"ifnull(sum(cost_pico), 0), ifnull(sum(saved_pico), 0) FROM ({source})"
    )
    if names:
        order = ", ".join(str(i + 1) for i in range(len(names)))
        sql += f" GROUP BY {order} ORDER BY {order}"
    with read() as conn:
        rows = conn.execute(sql, params).fetchall()
    out = []
    for r in rows:  # one per group, not per ledger row
        k = len(names)
        item: dict[str, Any] = dict(zip(names, r[:k], strict=True))
        item["calls"], item["unknown_cost_calls"] = r[k] or 0, r[k + 1] or 0
        for i, m in enumerate(MEASURES):
            item[m] = r[k + 2 + i] or 0
        item["search_credits"] = r[-3] or 0.0
        cost = from_pico(r[-2])
        item["cost_usd"], item["cost_usd_exact"] = float(cost), str(cost)
        item["saved_usd"] = float(from_pico(r[-1]))
        out.append(item)
    if not names and out and out[0]["calls"] == 0:
        return []
    return out


def recent(
    read: Reader, limit: int = 50, since: Any = None, until: Any = None, **filters: Any
) -> list[dict[str, Any]]:
    """The newest attempts as JSON-ready dicts (no prompts exist to leak)."""
    clause, params = where(parse_time(since), parse_time(until), filters, DIMENSIONS)
    with read() as conn:
        cur = conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM attempts WHERE {clause} "
            "ORDER BY ts DESC, rowid DESC LIMIT ?",
            [*params, int(limit)],
        )
        rows = cur.fetchall()
    return [row_view(r) for r in rows]


def row_view(values: Sequence[Any]) -> dict[str, Any]:
    """One ``attempts`` row (its values in :data:`COLUMNS` order, from either backend) as
    ``GET /byok/usage`` shows it: ISO times, dollars as decimal strings, flags as bools."""
    item = dict(zip(COLUMNS, values, strict=True))
    for us in ("ts", "ts_end"):
        item[us] = datetime.fromtimestamp(item[us] / 1e6, timezone.utc).isoformat()
    cost = item.pop("cost_pico")
    item["cost_usd"] = None if cost is None else str(from_pico(cost))
    saved = item.pop("saved_pico")
    item["saved_usd"] = None if saved is None else str(from_pico(saved))
    item["stream"], item["cache_hit"] = bool(item["stream"]), bool(item["cache_hit"])
    return item
