"""Spend limits, for ``jupyter byok budgets`` and ``%byok budget``.

Both front ends take the same subcommands (``list``, ``set``, ``remove``): the grammar is
defined once here, and :func:`run_budget` returns the text both of them show.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .render import table

__all__ = [
    "BUDGET_USAGE",
    "add_budget_commands",
    "list_budgets",
    "parse_budget_args",
    "remove_budget",
    "render_budgets",
    "run_budget",
    "set_budget",
]

BUDGET_USAGE = (
    "use %byok budget list | set day|month|call AMOUNT "
    "[--provider P | --model provider:model | --feature F] [--warn-at 0.8] | remove NAME"
)


def list_budgets() -> list[dict[str, Any]]:
    """Every budget with what has been spent against it (``budgets.status``)."""
    from .. import budgets
    from ..ledger import default_ledger

    return budgets.status(default_ledger())


def render_budgets(items: list[dict[str, Any]]) -> str:
    if not items:
        return "no budgets; add one with `jupyter byok budgets set day 5`"
    rows: list[tuple[str, ...]] = [("BUDGET", "LIMIT USD", "SPENT USD", "USED", "WARN AT", "STATE")]
    for b in items:
        used = "-" if b["fraction"] is None else f"{b['fraction']:.0%}"
        rows.append(
            (
                b["name"],
                b["limit_usd"],
                b["spent_usd"] or "-",
                used,
                f"{float(b['warn_at']):.0%}",
                b["state"],
            )
        )
    return table(rows)


def set_budget(
    period: str,
    amount: str,
    *,
    provider: str | None = None,
    model: str | None = None,
    feature: str | None = None,
    warn_at: str = "0.8",
) -> str:
    """Add or replace one budget; returns the line that confirms it."""
    from ..budgets import set_budget as store

    budget = store(period, amount, provider=provider, model=model, feature=feature, warn_at=warn_at)
    return f"budget {budget.name}: ${budget.limit_usd}, warning at {float(budget.warn_at):.0%}"


def remove_budget(name: str) -> str:
    from ..budgets import remove_budget as remove

    if not remove(name):
        raise ConfigError(f"no budget {name}; `jupyter byok budgets list` shows them")
    return f"removed budget {name}"


def add_budget_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """``list``, ``set`` and ``remove``, as ``jupyter byok budgets`` and ``%byok budget``."""
    p = subparsers.add_parser("list", help="budgets and what has been spent against them")
    p.add_argument("--json", action="store_true")
    p = subparsers.add_parser("set", help="add or replace a budget, e.g. `budgets set day 5`")
    p.add_argument("period", choices=["day", "month", "call"])
    p.add_argument("amount", help="US dollars")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--provider")
    scope.add_argument("--model", help="provider:model")
    scope.add_argument("--feature")
    p.add_argument("--warn-at", default="0.8", help="warn at this fraction (default 0.8)")
    p = subparsers.add_parser("remove", help="remove a budget by name (see `budgets list`)")
    p.add_argument("name")


def parse_budget_args(argv: Sequence[str], prog: str = "%byok budget") -> argparse.Namespace:
    """``argv`` (default ``list``) parsed by the shared grammar; a bad line raises
    ``ConfigError`` with the usage."""
    parser = argparse.ArgumentParser(prog=prog, add_help=False)
    add_budget_commands(parser.add_subparsers(dest="budgets_command", required=True))
    try:
        return parser.parse_args(list(argv) or ["list"])
    except SystemExit:
        raise ConfigError(BUDGET_USAGE) from None


def run_budget(args: argparse.Namespace) -> str:
    """Carry out a parsed budget subcommand; returns the text to show."""
    if args.budgets_command == "list":
        items = list_budgets()
        return json.dumps(items, indent=2) if args.json else render_budgets(items)
    if args.budgets_command == "set":
        return set_budget(
            args.period,
            args.amount,
            provider=args.provider,
            model=args.model,
            feature=args.feature,
            warn_at=args.warn_at,
        )
    return remove_budget(args.name)
