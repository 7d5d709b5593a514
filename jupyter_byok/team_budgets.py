"""Budgets across servers, enforced with reservations in the shared ledger (PostgreSQL).

The tables are :mod:`.ledger.reserve`'s; this module is the policy.

A budget belongs to a user, a team, a key (``provider@name``) or everyone (``total``), per
UTC day or month. Before a call is sent, one transaction:

1. locks the budgets that apply (transaction-level advisory locks, in name order: no
   deadlock; a server's role needs no write permission on ``budgets`` for them),
2. reads, in a new statement (so it sees every commit made while it waited for the lock),
   what was spent this period (``budget_spent``, kept by a trigger on ``attempts``) and
   what calls in flight have reserved,
3. blocks the call if spent + reserved + this call's estimate passes a limit, else
   reserves the estimate against each budget.

The call's rows delete its reservations in the transaction that inserts them (the
settlement: :meth:`.shared.SharedLedger.record_or_keep`). So concurrent servers cannot spend
past a limit by more than the error of the estimates in flight (an estimate is an upper
bound: none, in practice). A reservation whose process died stops counting after
``RESERVATION_TTL_S``.

While the database is unreachable, a budget that applies follows its ``offline`` setting
(``block``, the default, or ``allow`` with a warning); ``JUPYTER_BYOK_BUDGET_OFFLINE``
overrides it for every budget of a server.
"""

from __future__ import annotations

import os
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .budgets import BudgetDecision, _money, _usd
from .errors import ConfigError, LedgerError
from .ledger.pg import APPLIES, DROP_SPEND_TRIGGER, RESERVATION_TTL_S, SPEND_TRIGGER
from .ledger.reserve import OFFLINE, PERIODS, SCOPES, SharedBudget, period_start
from .ledger.schema import from_pico, to_pico
from .ledger.who import who

if TYPE_CHECKING:
    import psycopg

    from .ledger.shared import SharedLedger

__all__ = ["remove_budget", "reserve", "set_budget"]

_DAY_US = 86_400 * 1_000_000


def set_budget(
    conn: psycopg.Connection[Any],
    period: str,
    limit_usd: Any,
    *,
    scope: str = "total",
    target: str | None = None,
    warn_at: float = 0.8,
    offline: str = "block",
) -> SharedBudget:
    """Add or replace a budget across servers; what was spent this period so far counts."""
    if period not in PERIODS:
        raise ConfigError(
            f"a shared budget's period is one of {', '.join(PERIODS)}, not {period!r}"
        )
    if scope not in SCOPES:
        raise ConfigError(f"a shared budget's scope is one of {', '.join(SCOPES)}, not {scope!r}")
    if offline not in OFFLINE:
        raise ConfigError(f"offline is block or allow, not {offline!r}")
    if scope == "total":
        target = None
    elif not target:
        raise ConfigError(f"a {scope} budget names its {scope}, e.g. --{scope} NAME")
    limit = _money(limit_usd, "a budget limit")
    name = ":".join(x for x in (period, scope, target) if x)
    start = period_start(period)
    end = period_start(period, time.time() + 32 * 86_400) if period == "month" else start + _DAY_US
    applies = APPLIES.format(
        user="a.user_name", team="a.team", provider="a.provider", key="a.key_name"
    )
    with conn.transaction():
        # the trigger first: its lock on attempts holds inserts until this commits, so no
        # row is counted twice or missed between the sum below and the trigger
        conn.execute(DROP_SPEND_TRIGGER)
        conn.execute(SPEND_TRIGGER)
        conn.execute(
            "INSERT INTO budgets VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE "
            "SET limit_pico = excluded.limit_pico, warn_at = excluded.warn_at, "
            "offline = excluded.offline",
            (name, period, scope, target, to_pico(limit), warn_at, offline),
        )
        # the trigger counts rows from now on; the period so far is counted once, here
        conn.execute(
            "INSERT INTO budget_spent (budget, period_start, spent_pico) "
            f"SELECT b.name, %s, coalesce(sum(a.cost_pico), 0) FROM budgets b "
            f"LEFT JOIN attempts a ON {applies} AND a.ts >= %s AND a.ts < %s "
            "WHERE b.name = %s GROUP BY b.name "
            "ON CONFLICT (budget, period_start) DO UPDATE SET spent_pico = excluded.spent_pico",
            (start, start, end, name),
        )
    return SharedBudget(name, period, scope, target, limit, warn_at, offline)


def remove_budget(conn: psycopg.Connection[Any], name: str) -> bool:
    with conn.transaction():
        cur = conn.execute("DELETE FROM budgets WHERE name = %s", (name,))
        left = conn.execute("SELECT count(*) FROM budgets").fetchone()
        if left is not None and left[0] == 0:
            conn.execute(DROP_SPEND_TRIGGER)
    return cur.rowcount > 0


def _offline_policy(budget: SharedBudget) -> str:
    value = os.environ.get("JUPYTER_BYOK_BUDGET_OFFLINE", "").strip().lower()
    return value if value in OFFLINE else budget.offline


def reserve(
    ledger: SharedLedger,
    request_id: str,
    provider: str,
    key_name: str | None,
    estimate: Decimal | None,
) -> BudgetDecision:
    """Check and reserve this call's estimate against every budget across servers that
    applies (see the module's notes); the decision says whether the call may go."""
    user, team, _ = who()
    key = f"{provider}@{key_name or 'default'}"
    applicable = [b for b in ledger.shared_budgets() if b.applies(user, team, key)]
    decision = BudgetDecision()
    if not applicable:
        return decision
    if ledger.unreachable is None:
        try:
            return _reserve(ledger, request_id, applicable, estimate)
        except LedgerError as exc:
            ledger.mark_unreachable(exc)
    for budget in applicable:
        if _offline_policy(budget) == "block":
            decision.allowed = False
            decision.blocked_by = budget.name
            decision.message = (
                f"budget {budget.name} blocks this call: the shared ledger cannot be reached "
                f"({ledger.unreachable}), so the budget cannot be checked; retry when it is back, "
                "or ask the admin to set it to allow calls offline"
            )
            return decision
    decision.warnings.append(
        f"budgets {', '.join(b.name for b in applicable)} not checked: the shared ledger "
        f"cannot be reached ({ledger.unreachable}); this call is allowed and recorded later"
    )
    return decision


def _reserve(
    ledger: SharedLedger, request_id: str, applicable: list[SharedBudget], estimate: Decimal | None
) -> BudgetDecision:
    decision = BudgetDecision()
    est = to_pico(estimate) or 0
    names = sorted(b.name for b in applicable)
    now = time.time()
    starts = (period_start("day", now), period_start("month", now))
    with ledger.db.connection() as conn, conn.transaction():
        for name in names:  # one statement each: the order is the order taken
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('jupyter_byok.budget:' || %s))", (name,)
            )
        stats = conn.execute(
            "SELECT b.name, b.limit_pico, b.warn_at, coalesce(s.spent_pico, 0), "
            "coalesce((SELECT sum(r.amount_pico) FROM reservations r WHERE r.budget = b.name "
            f"AND r.made_at > now() - interval '{RESERVATION_TTL_S} seconds'), 0) "
            f"FROM budgets b LEFT JOIN budget_spent s ON s.budget = b.name "
            "AND s.period_start = CASE b.period WHEN 'day' THEN %s ELSE %s END "
            "WHERE b.name = ANY(%s) ORDER BY b.name",
            (*starts, names),
        ).fetchall()
        for name, limit, warn_at, spent, reserved in stats:
            spent, reserved = int(spent), int(reserved)
            projected = spent + reserved + est
            if (projected > limit or spent >= limit) and not (estimate is not None and est == 0):
                may = (
                    f"this call may cost up to {_usd(estimate)}"
                    if estimate is not None
                    else ("cost unknown")
                )
                decision.allowed = False
                decision.blocked_by = name
                decision.message = (
                    f"budget {name} (across servers) blocks this call: {_usd(from_pico(spent))} "
                    f"spent and {_usd(from_pico(reserved))} reserved by calls in flight of "
                    f"{_usd(from_pico(limit))}, {may}; ask the admin to raise it with "
                    f"`jupyter byok ledger budgets set`"
                )
                return decision
            if limit > 0 and projected >= warn_at * limit:
                decision.warnings.append(
                    f"budget {name} (across servers): {int(projected / limit * 100)}% of "
                    f"{_usd(from_pico(limit))} with this call and the calls in flight"
                )
        if est:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO reservations (request_id, budget, amount_pico) "
                    "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    [(request_id, name, est) for name, *_ in stats],
                )
    return decision
