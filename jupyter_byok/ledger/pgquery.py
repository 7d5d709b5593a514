"""Reading the shared ledger in SQL (PostgreSQL): the sums behind spend, summaries and
charts, with the same filters, groups, buckets and reply shapes as :mod:`.query`.

PostgreSQL keeps no rollup: it sums over ``attempts`` with its indexes (``ts``,
``(user_name, ts)``, ``(team, ts)``) and parallel scans. Every function takes a reader that
opens a connection (:meth:`.shared.SharedLedger.connection`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

from ..errors import ConfigError
from .query import parse_time, row_view, where
from .schema import COLUMNS, DIMENSIONS, MEASURES, from_pico

__all__ = ["count", "recent", "spend", "summary"]

Reader = Callable[[], AbstractContextManager[Any]]

#: bucket -> (microseconds per grouping unit, the unit's label from its number ``d``):
#: rows are grouped by an integer (``ts / unit``) and only the groups are formatted
_HOUR, _DAY = 3_600_000_000, 86_400_000_000
_AT = "to_timestamp(d * {secs}::double precision) AT TIME ZONE 'UTC'"
_BUCKETS: dict[str | None, tuple[int, str] | None] = {
    None: None,
    "hour": (_HOUR, f'to_char({_AT.format(secs=3600)}, \'YYYY-MM-DD"T"HH24:00:00"Z"\')'),
    "day": (_DAY, f"to_char({_AT.format(secs=86400)}, 'YYYY-MM-DD')"),
    "week": (_DAY, f"to_char(date_trunc('week', {_AT.format(secs=86400)}), 'YYYY-MM-DD')"),
    "month": (_DAY, f"to_char({_AT.format(secs=86400)}, 'YYYY-MM-01')"),
}


def _where(since: int | None, until: int | None, filters: dict[str, Any]) -> tuple[str, list[Any]]:
    clause, params = where(since, until, filters, DIMENSIONS)
    return ("TRUE" if clause == "1" else clause.replace("?", "%s")), params


def spend(read: Reader, since: Any = None, until: Any = None, **filters: Any) -> Decimal:
    clause, params = _where(parse_time(since), parse_time(until), filters)
    with read() as conn:
        (total,) = conn.execute(
            f"SELECT sum(cost_pico) FROM attempts WHERE {clause}", params
        ).fetchone()
    return from_pico(None if total is None else int(total))


def count(read: Reader, **filters: Any) -> int:
    clause, params = _where(None, None, filters)
    with read() as conn:
        (n,) = conn.execute(f"SELECT count(*) FROM attempts WHERE {clause}", params).fetchone()
    return int(n)


def summary(
    read: Reader,
    by: list[str],
    since: Any = None,
    until: Any = None,
    bucket: str | None = None,
    **filters: Any,
) -> list[dict[str, Any]]:
    by = list(by)
    bad = [b for b in by if b not in DIMENSIONS]
    if bad or bucket not in _BUCKETS:
        raise ConfigError(
            f"cannot group usage by {bad[0] if bad else bucket!r}: group by "
            f"{', '.join(DIMENSIONS)} and bucket by hour, day, week or month"
        )
    clause, params = _where(parse_time(since), parse_time(until), filters)
    bucketing = _BUCKETS[bucket]
    # inner: sums per integer time unit (cheap per row); outer: label and merge the groups
    inner_keys = ([f"ts / {bucketing[0]} AS d"] if bucketing else []) + by
    sums = ", ".join(f"sum({m}) AS {m}" for m in MEASURES)
    inner = (
        f"SELECT {', '.join([*inner_keys, 'count(*) AS n'])}, "
        "count(*) FILTER (WHERE cost_pico IS NULL) AS unknown_n, "
        f"{sums}, sum(search_credits) AS search_credits, sum(cost_pico) AS cost_pico, "
        f"sum(saved_pico) AS saved_pico FROM attempts WHERE {clause}"
    )
    if inner_keys:
        inner += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(inner_keys)))
    keys = ([f"{bucketing[1]} AS bucket"] if bucketing else []) + by
    names = (["bucket"] if bucketing else []) + by
    outer_sums = ", ".join(f"sum({m})" for m in MEASURES)
    sql = (
        f"SELECT {', '.join([*keys, 'sum(n)', 'sum(unknown_n)'])}, {outer_sums}, "
        "sum(search_credits), coalesce(sum(cost_pico), 0), coalesce(sum(saved_pico), 0) "
        f"FROM ({inner}) g"
    )
    if names:
        order = ", ".join(str(i + 1) for i in range(len(names)))
        sql += f" GROUP BY {order} ORDER BY {order}"
    with read() as conn:
        rows = conn.execute(sql, params).fetchall()
    out = []
    for r in rows:
        k = len(names)
        item: dict[str, Any] = dict(zip(names, r[:k], strict=True))
        item["calls"], item["unknown_cost_calls"] = int(r[k] or 0), int(r[k + 1] or 0)
        for i, m in enumerate(MEASURES):
            item[m] = int(r[k + 2 + i] or 0)
        item["search_credits"] = float(r[-3] or 0.0)
        cost = from_pico(int(r[-2]))
        item["cost_usd"], item["cost_usd_exact"] = float(cost), str(cost)
        item["saved_usd"] = float(from_pico(int(r[-1])))
        out.append(item)
    if not names and out and out[0]["calls"] == 0:
        return []
    return out


def recent(
    read: Reader, limit: int = 50, since: Any = None, until: Any = None, **filters: Any
) -> list[dict[str, Any]]:
    clause, params = _where(parse_time(since), parse_time(until), filters)
    with read() as conn:
        rows = conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM attempts WHERE {clause} "
            "ORDER BY ts DESC, id DESC LIMIT %s",
            [*params, int(limit)],
        ).fetchall()
    return [row_view(r) for r in rows]
