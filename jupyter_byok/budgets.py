"""Spend limits, checked before any request is sent.

Invariants: a hard limit blocks a call whose upper-bound estimate would take the spend past
it, before any byte goes to a provider; crossing the warning threshold (default 80%) is
reported, never silent; limits live in ``$JUPYTER_BYOK_HOME/budgets.json``, written
atomically under a lock. Periods are UTC days and months, or a single call.

A budget is named ``PERIOD:SCOPE[:TARGET]``, e.g. ``day:total``, ``month:provider:openai``,
``call:model:anthropic:claude-opus-4-7`` or ``day:feature:pipeline``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._files import atomic_write, file_lock
from .config import home_file
from .errors import ConfigError

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = [
    "Budget",
    "BudgetDecision",
    "check",
    "get_budgets",
    "merge_budgets",
    "remove_budget",
    "replace_budgets",
    "set_budget",
    "status",
]

log = logging.getLogger("jupyter_byok")

PERIODS = ("day", "month", "call")
SCOPES = ("total", "provider", "model", "feature")
_SINCE = {"day": "today", "month": "month"}
_WHEN = {"day": "today (UTC)", "month": "this month (UTC)", "call": "per call"}


@dataclass(frozen=True)
class Budget:
    period: str
    limit_usd: Decimal
    scope: str = "total"
    target: str | None = None
    warn_at: Decimal = Decimal("0.8")

    @property
    def name(self) -> str:
        return ":".join(x for x in (self.period, self.scope, self.target) if x)

    def applies(self, provider: str, model: str, feature: str) -> bool:
        if self.scope == "total":
            return True
        value = {"provider": provider, "model": f"{provider}:{model}", "feature": feature}
        return value[self.scope] == self.target

    def filters(self) -> dict[str, str]:
        if self.scope == "provider":
            return {"provider": str(self.target)}
        if self.scope == "feature":
            return {"feature": str(self.target)}
        if self.scope == "model":
            provider, _, model = str(self.target).partition(":")
            return {"provider": provider, "model": model}
        return {}

    def set_command(self) -> str:
        opt = "" if self.scope == "total" else f" --{self.scope} {self.target}"
        return f"jupyter byok budgets set {self.period} AMOUNT{opt}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "period": self.period,
            "scope": self.scope,
            "target": self.target,
            "limit_usd": str(self.limit_usd),
            "warn_at": str(self.warn_at),
        }

    @classmethod
    def from_json(cls, data: Any) -> Budget:
        if not isinstance(data, dict):
            raise ConfigError("a budget must be an object with period, limit_usd and scope")
        return make_budget(
            str(data.get("period", "")),
            data.get("limit_usd"),
            scope=str(data.get("scope") or "total"),
            target=data.get("target"),
            warn_at=data.get("warn_at", "0.8"),
        )


def _money(value: Any, what: str) -> Decimal:
    if isinstance(value, float | bool) or value is None:
        value = "" if value is None or isinstance(value, bool) else repr(value)
    try:
        d = Decimal(str(value).strip().lstrip("$"))
    except InvalidOperation:
        raise ConfigError(f"{what} must be a number of US dollars such as 5 or 0.50")
    if not d.is_finite() or d < 0:
        raise ConfigError(f"{what} must be zero or more US dollars")
    return d


def make_budget(
    period: str,
    limit_usd: Any,
    *,
    scope: str = "total",
    target: str | None = None,
    warn_at: Any = "0.8",
) -> Budget:
    if period not in PERIODS:
        raise ConfigError(f"budget period {period!r} is not one of {', '.join(PERIODS)}")
    if scope not in SCOPES:
        raise ConfigError(f"budget scope {scope!r} is not one of {', '.join(SCOPES)}")
    if scope == "total":
        target = None
    elif not target:
        raise ConfigError(f"a {scope} budget needs a {scope} name, e.g. --{scope} NAME")
    elif scope == "model" and ":" not in target:
        raise ConfigError("a model budget names provider:model, e.g. --model openai:gpt-4o")
    warn = _money(warn_at, "the warning threshold")
    if not 0 < warn <= 1:
        raise ConfigError("the warning threshold is a fraction of the limit between 0 and 1")
    return Budget(period, _money(limit_usd, "a budget limit"), scope, target, warn)


@dataclass
class BudgetDecision:
    allowed: bool = True
    warnings: list[str] = field(default_factory=list)
    blocked_by: str | None = None
    message: str = ""


# ------------------------------------------------------------------------- storage
def _path() -> Path:
    return home_file("budgets.json")


def has_budgets() -> bool:
    """Cheap test (one stat) used on every call: no file, no budget to check.

    ``Path.exists`` without its layers (the same ``stat``, the same errors ignored)."""
    try:
        os.stat(_path())
    except OSError as exc:
        if exc.errno in _ABSENT:
            return False
        raise
    except ValueError:
        return False
    return True


#: errors for which ``Path.exists`` answers False (an unreadable folder raises)
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})


def get_budgets() -> list[Budget]:
    path = _path()
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        data = json.loads(raw)
        items = data["budgets"]
        if not isinstance(items, list):
            raise TypeError("budgets is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"budgets file {path} is unreadable ({exc}); fix it or move it away to start over"
        )
    return [Budget.from_json(item) for item in items]


def _save(budgets: list[Budget]) -> None:
    body = {"version": 1, "budgets": [b.to_json() for b in budgets]}
    atomic_write(_path(), json.dumps(body, indent=2).encode() + b"\n")


def _lock() -> Any:
    return file_lock(_path().with_name("budgets.lock"))


def set_budget(
    period: str,
    limit_usd: Any,
    *,
    provider: str | None = None,
    model: str | None = None,
    feature: str | None = None,
    warn_at: Any = "0.8",
) -> Budget:
    """Add or replace the budget for this period and scope."""
    given = [
        (s, t) for s, t in (("provider", provider), ("model", model), ("feature", feature)) if t
    ]
    if len(given) > 1:
        raise ConfigError("a budget has one scope: give only one of --provider, --model, --feature")
    scope, target = given[0] if given else ("total", None)
    budget = make_budget(period, limit_usd, scope=scope, target=target, warn_at=warn_at)
    with _lock():
        budgets = [b for b in get_budgets() if b.name != budget.name]
        budgets.append(budget)
        _save(budgets)
    return budget


def remove_budget(name: str) -> bool:
    """Remove the budget called ``name`` (as ``budgets list`` shows it); False if none."""
    with _lock():
        budgets = get_budgets()
        kept = [b for b in budgets if b.name != name]
        if len(kept) == len(budgets):
            return False
        _save(kept)
    return True


def replace_budgets(items: list[dict[str, Any]]) -> list[Budget]:
    """Replace every budget at once (the REST API); invalid input changes nothing."""
    budgets = [Budget.from_json(item) for item in items]
    names = [b.name for b in budgets]
    if len(set(names)) != len(names):
        raise ConfigError("two budgets have the same period and scope; keep one of them")
    with _lock():
        _save(budgets)
    return budgets


def merge_budgets(
    items: list[dict[str, Any]], *, replace: bool = False, dry_run: bool = False
) -> list[tuple[str, str]]:
    """Merge budgets (``jupyter byok restore``) in one write: ``(name, outcome)`` per item,
    ``added``, ``same``, ``conflict`` (another limit: kept) or ``replaced``. Invalid input
    changes nothing."""
    incoming = [Budget.from_json(item) for item in items]
    with _lock():
        current = {b.name: b for b in get_budgets()}
        outcomes: list[tuple[str, str]] = []
        for budget in incoming:
            old = current.get(budget.name)
            if old == budget:
                outcomes.append((budget.name, "same"))
            elif old is not None and not replace:
                outcomes.append((budget.name, "conflict"))
            else:
                outcomes.append((budget.name, "added" if old is None else "replaced"))
                current[budget.name] = budget
        if not dry_run and any(o in ("added", "replaced") for _, o in outcomes):
            _save(list(current.values()))
    return outcomes


# --------------------------------------------------------------------------- checks
def _usd(d: Decimal) -> str:
    return f"${d.quantize(Decimal('0.01')) if d >= Decimal('0.01') or d == 0 else d.quantize(Decimal('0.0001'))}"


def check(
    provider: str,
    model: str,
    feature: str,
    estimated_cost: Decimal | None,
    ledger: Ledger,
) -> BudgetDecision:
    """May this call go ahead? Blocks before the request when a hard limit would be passed."""
    decision = BudgetDecision()
    for budget in get_budgets():
        if not budget.applies(provider, model, feature):
            continue
        est = estimated_cost
        if budget.period == "call":
            spent = Decimal(0)
        else:
            spent = ledger.spend(since=_SINCE[budget.period], **budget.filters())
        projected = spent + (est or Decimal(0))
        when = _WHEN[budget.period]
        over = projected > budget.limit_usd or (
            budget.period != "call" and spent >= budget.limit_usd
        )
        if over and est != 0:  # a free call (local model) is never blocked
            may = f"this call may cost up to {_usd(est)}" if est is not None else "cost unknown"
            decision.allowed = False
            decision.blocked_by = budget.name
            decision.message = (
                f"budget {budget.name} blocks this call: {_usd(spent)} spent {when} of "
                f"{_usd(budget.limit_usd)}, {may}; raise it with `{budget.set_command()}` "
                f"or remove it with `jupyter byok budgets remove {budget.name}`"
            )
            log.warning("%s", decision.message)
            return decision
        if est is None and budget.period == "call":
            decision.warnings.append(
                f"budget {budget.name}: {provider}:{model} has no price, so this call cannot be "
                "checked against the limit"
            )
        elif budget.limit_usd > 0 and projected >= budget.warn_at * budget.limit_usd:
            pct = int(projected / budget.limit_usd * 100)
            decision.warnings.append(
                f"budget {budget.name}: {_usd(spent)} spent {when}, {pct}% of "
                f"{_usd(budget.limit_usd)} with this call"
            )
    for text in decision.warnings:
        log.warning("%s", text)
    return decision


def status(ledger: Ledger) -> list[dict[str, Any]]:
    """Every budget with what has been spent against it (JSON-ready)."""
    out = []
    for budget in get_budgets():
        item = budget.to_json()
        if budget.period == "call":
            item.update(spent_usd=None, fraction=None, state="ok")
        else:
            spent = ledger.spend(since=_SINCE[budget.period], **budget.filters())
            frac = float(spent / budget.limit_usd) if budget.limit_usd > 0 else float(spent > 0)
            state = "exceeded" if frac >= 1 else "warning" if frac >= budget.warn_at else "ok"
            item.update(spent_usd=str(spent), fraction=frac, state=state)
        out.append(item)
    return out
