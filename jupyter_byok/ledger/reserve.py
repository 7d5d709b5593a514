"""Budgets across servers as the shared ledger stores them (PostgreSQL tables
``budgets``, ``budget_spent`` and ``reservations``, made by migration ``m006_who_where``
in :mod:`.pg`). The policy (reserving before a call, what happens offline) is
:mod:`jupyter_byok.team_budgets`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .schema import from_pico

if TYPE_CHECKING:
    import psycopg

__all__ = ["OFFLINE", "PERIODS", "SCOPES", "SharedBudget", "list_budgets", "period_start"]

PERIODS = ("day", "month")
SCOPES = ("total", "user", "team", "key")
OFFLINE = ("block", "allow")
_DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True)
class SharedBudget:
    name: str
    period: str
    scope: str
    target: str | None
    limit_usd: Decimal
    warn_at: float
    offline: str

    def applies(self, user: str, team: str | None, key: str) -> bool:
        return (
            self.scope == "total"
            or (self.scope == "user" and self.target == user)
            or (self.scope == "team" and self.target == team)
            or (self.scope == "key" and self.target == key)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "period": self.period,
            "scope": self.scope,
            "target": self.target,
            "limit_usd": str(self.limit_usd),
            "warn_at": str(self.warn_at),
            "offline": self.offline,
        }


def period_start(period: str, now: float | None = None) -> int:
    """The start of the current UTC day or month, in microseconds (as the trigger sums)."""
    t = time.time() if now is None else now
    if period == "day":
        return (int(t * 1e6) // _DAY_US) * _DAY_US
    d = datetime.fromtimestamp(t, timezone.utc)
    return int(datetime(d.year, d.month, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000


def list_budgets(conn: psycopg.Connection[Any]) -> list[SharedBudget]:
    rows = conn.execute(
        "SELECT name, period, scope, target, limit_pico, warn_at, offline FROM budgets "
        "ORDER BY name"
    ).fetchall()
    return [SharedBudget(r[0], r[1], r[2], r[3], from_pico(r[4]), float(r[5]), r[6]) for r in rows]
