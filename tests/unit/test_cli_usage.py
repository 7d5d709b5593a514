"""`jupyter byok usage | prices | budgets | cache` through a real argparse parser."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from jupyter_byok import budgets
from jupyter_byok.cache import ResponseCache
from jupyter_byok.cli import build_parser
from jupyter_byok.commands.budgets import parse_budget_args, run_budget
from jupyter_byok.errors import ByokError, ConfigError
from jupyter_byok.ledger import LedgerRow, default_ledger


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    args = build_parser().parse_args(list(argv))
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_usage_table_and_exports(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "no calls recorded" in run(capsys, "usage")
    led = default_ledger()
    led.record(
        LedgerRow(
            "openai",
            "gpt-4o-mini",
            "ok",
            input_tokens=1200,
            output_tokens=30,
            cost_usd=Decimal("0.0002"),
        )
    )
    led.record(
        LedgerRow(
            "anthropic", "claude-haiku-4-5", "ok", feature="magic", cost_usd=Decimal("0.0125")
        )
    )
    led.record(LedgerRow("xai", "mystery", "ok", cost_usd=None))
    out = run(
        capsys,
        "usage",
        "--since",
        "today",
        "--csv",
        str(tmp_path / "u.csv"),
        "--parquet",
        str(tmp_path / "u.parquet"),
    )
    assert "PROVIDER" in out and "anthropic" in out and "1,200" in out
    assert "0.012500" in out and "(+1 unpriced)" in out
    assert "total since today: $0.0127" in out
    assert (tmp_path / "u.csv").exists() and (tmp_path / "u.parquet").exists()
    data = json.loads(
        run(capsys, "usage", "--by", "provider,feature", "--provider", "anthropic", "--json")
    )
    assert data["total_usd"] == "0.0125" and data["groups"][0]["feature"] == "magic"


def test_prices_show_and_update(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = run(capsys, "prices", "show")
    assert "openai:gpt-4o-mini" in out and "tavily:advanced" in out and "2026-11-27" in out
    one = json.loads(run(capsys, "prices", "show", "anthropic:claude-sonnet-4-6"))
    assert one["cache_write_1h"] == "6.00"
    with pytest.raises(ConfigError, match="no price"):
        run(capsys, "prices", "show", "openai:nope")
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "x", "models": {"openai:gpt-4o": {"input": "free"}}}')
    with pytest.raises(ConfigError):
        run(capsys, "prices", "update", "--from", str(bad))
    assert json.loads(run(capsys, "prices", "show", "openai:gpt-4o"))["input"] == "2.50"
    good = tmp_path / "good.json"
    good.write_text(
        '{"version": "mine", "models": {"openai:gpt-4o": {"input": "2.00", "output": "8.00"}}}'
    )
    assert "1 models" in run(capsys, "prices", "update", "--from", str(good))
    assert json.loads(run(capsys, "prices", "show", "openai:gpt-4o"))["input"] == "2.00"


def test_budgets_and_cache_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert "no budgets" in run(capsys, "budgets", "list")
    assert "day:provider:openai" in run(
        capsys, "budgets", "set", "day", "2", "--provider", "openai"
    )
    default_ledger().record(LedgerRow("openai", "gpt-4o", "ok", cost_usd=Decimal("1.8")))
    out = run(capsys, "budgets", "list")
    assert "day:provider:openai" in out and "90%" in out and "warning" in out
    assert budgets.get_budgets()[0].limit_usd == 2
    with pytest.raises(SystemExit):
        run(capsys, "budgets", "set", "day", "2", "--provider", "a", "--feature", "b")
    run(capsys, "budgets", "remove", "day:provider:openai")
    with pytest.raises(ByokError):
        run(capsys, "budgets", "remove", "day:provider:openai")
    # %byok budget: the same grammar and text, through commands.budgets
    assert "month:total" in run_budget(parse_budget_args(["set", "month", "50"]))
    assert "month:total" in run_budget(parse_budget_args([]))  # list by default
    with pytest.raises(ConfigError, match="budget list"):
        parse_budget_args(["frobnicate"])
    capsys.readouterr()
    ResponseCache().put("k", {"text": "x"}, Decimal("0.1"))
    assert json.loads(run(capsys, "cache", "stats"))["entries"] == 1
    assert "removed 1" in run(capsys, "cache", "clear")
