"""Budgets warn at the threshold and block before the request, naming how to raise them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from jupyter_byok import budgets
from jupyter_byok.errors import ConfigError
from jupyter_byok.ledger import Ledger, LedgerRow


def spend(led: Ledger, usd: str, *, provider: str = "openai", model: str = "gpt-4o",
          feature: str = "api", when: float | None = None) -> None:  # fmt: skip
    led.record(LedgerRow(provider, model, "ok", feature=feature, cost_usd=Decimal(usd),
                         ts_start=when, ts_end=when))  # fmt: skip


def test_daily_budget_warns_then_blocks(byok_home: Path) -> None:
    led = Ledger()
    budgets.set_budget("day", "1.00")
    spend(led, "0.70")
    d = budgets.check("openai", "gpt-4o", "api", Decimal("0.05"), led)
    assert d.allowed and d.warnings == []
    d = budgets.check("openai", "gpt-4o", "api", Decimal("0.15"), led)
    assert d.allowed and len(d.warnings) == 1 and "85%" in d.warnings[0]
    d = budgets.check("openai", "gpt-4o", "api", Decimal("0.31"), led)
    assert not d.allowed and d.blocked_by == "day:total"
    assert "$0.70 spent today" in d.message and "$1.00" in d.message
    assert "jupyter byok budgets set day AMOUNT" in d.message and "\n" not in d.message
    # yesterday's spend does not count today
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1, hours=1)).timestamp()
    spend(led, "5", when=yesterday)
    assert budgets.check("openai", "gpt-4o", "api", Decimal("0.05"), led).allowed
    # once the limit is reached, even an unpriced call is blocked; a free one is not
    spend(led, "0.30")
    assert not budgets.check("openai", "mystery", "api", None, led).allowed
    assert budgets.check("local", "smollm2", "api", Decimal(0), led).allowed


def test_scopes_provider_model_feature_and_per_call(byok_home: Path) -> None:
    led = Ledger()
    budgets.set_budget("month", "2", provider="anthropic")
    budgets.set_budget("day", "0.5", model="openai:gpt-4o")
    budgets.set_budget("day", "0.1", feature="pipeline")
    budgets.set_budget("call", "0.25")
    spend(led, "0.45", model="gpt-4o")
    spend(led, "0.45", model="gpt-4o-mini")  # another model: not in the gpt-4o budget
    assert budgets.check("openai", "gpt-4o-mini", "api", Decimal("0.2"), led).allowed
    d = budgets.check("openai", "gpt-4o", "api", Decimal("0.2"), led)
    assert d.blocked_by == "day:model:openai:gpt-4o"
    assert "--model openai:gpt-4o" in d.message
    d = budgets.check("anthropic", "claude-haiku-4-5", "api", Decimal("0.3"), led)
    assert d.blocked_by == "call:total"
    assert budgets.check("anthropic", "claude-haiku-4-5", "api", Decimal("0.2"), led).allowed
    spend(led, "0.09", feature="pipeline", provider="gemini", model="g")
    d = budgets.check("gemini", "g", "pipeline", Decimal("0.02"), led)
    assert d.blocked_by == "day:feature:pipeline"
    states = {s["name"]: s for s in budgets.status(led)}
    assert states["day:model:openai:gpt-4o"]["spent_usd"] == "0.45"
    assert states["day:model:openai:gpt-4o"]["state"] == "warning"
    assert states["month:provider:anthropic"]["state"] == "ok"
    json.dumps(budgets.status(led))  # JSON-ready for the REST API


def test_storage_replace_remove_and_validation(byok_home: Path) -> None:
    budgets.set_budget("day", "5")
    budgets.set_budget("day", "7")  # replaces, not duplicates
    got = budgets.get_budgets()
    assert [(b.name, b.limit_usd) for b in got] == [("day:total", Decimal(7))]
    data = json.loads((byok_home / "budgets.json").read_text())
    assert data["budgets"][0]["limit_usd"] == "7"
    for bad in [("week", "5"), ("day", "-1"), ("day", "lots")]:
        with pytest.raises(ConfigError):
            budgets.set_budget(*bad)
    with pytest.raises(ConfigError):
        budgets.set_budget("day", "1", provider="openai", feature="x")
    with pytest.raises(ConfigError):
        budgets.set_budget("day", "1", warn_at="1.5")
    with pytest.raises(ConfigError):
        budgets.replace_budgets([{"period": "day", "limit_usd": "1"}, {"period": "fortnight"}])
    assert [b.name for b in budgets.get_budgets()] == ["day:total"]  # unchanged
    budgets.replace_budgets(
        [{"period": "month", "limit_usd": "20", "scope": "provider", "target": "xai"}]
    )
    assert [b.name for b in budgets.get_budgets()] == ["month:provider:xai"]
    assert budgets.remove_budget("month:provider:xai") and not budgets.remove_budget("nope")
    assert budgets.get_budgets() == []
    (byok_home / "budgets.json").write_text("{broken")
    with pytest.raises(ConfigError):
        budgets.get_budgets()
