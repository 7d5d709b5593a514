"""``jupyter byok usage | prices | budgets | cache``: the ledger and its guard rails in a terminal.

The work is in :mod:`jupyter_byok.commands` (shared with ``%byok``); handlers here print
and return an exit code. Expected failures raise ``ByokError`` subclasses, which
``jupyter_byok.cli.main`` turns into one line on stderr.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigError
from .render import out

__all__ = ["register"]


# --------------------------------------------------------------------------- usage
def cmd_usage(args: argparse.Namespace) -> int:
    from ..commands.usage import export_usage, render_usage, usage_summary

    filters = {k: getattr(args, k) for k in ("provider", "model", "feature") if getattr(args, k)}
    by = [b for b in args.by.split(",") if b]
    summary = usage_summary(by, since=args.since, until=args.until, scope=args.scope, **filters)
    for path in (args.csv, args.parquet):
        if path:
            out(f"wrote {export_usage(path, since=args.since, until=args.until, **filters)}")
    if args.json:
        data = {"total_usd": str(summary["total_usd"]), "groups": summary["groups"]}
        out(json.dumps(data, indent=2))
        return 0
    out(render_usage(summary))
    return 0


# -------------------------------------------------------------------------- prices
def cmd_prices_show(args: argparse.Namespace) -> int:
    from ..commands.prices import price, price_table, render_price_table

    if args.model:
        found = price(args.model)
        if found["price"] is None:
            raise ConfigError(
                f"no price for {found['id']}: its calls are recorded as cost unknown; "
                "add it with `jupyter byok prices update --from FILE`"
            )
        out(json.dumps(found["price"], indent=2, default=str))
        return 0
    out(render_price_table(price_table()))
    return 0


def cmd_prices_update(args: argparse.Namespace) -> int:
    from ..commands.prices import update_prices

    info = update_prices(args.source)
    out(f"price override {info['version']} installed: {info['models']} models")
    return 0


# ------------------------------------------------------------------------- budgets
def cmd_budgets(args: argparse.Namespace) -> int:
    from ..commands.budgets import run_budget

    out(run_budget(args))
    return 0


# --------------------------------------------------------------------------- cache
def cmd_cache_stats(args: argparse.Namespace) -> int:
    from ..cache import ResponseCache

    out(json.dumps(ResponseCache().stats(), indent=2))
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    from ..cache import ResponseCache

    out(f"removed {ResponseCache().clear()} cached responses")
    return 0


# ------------------------------------------------------------------------ register
def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``usage``, ``prices``, ``budgets`` and ``cache`` to the ``jupyter byok`` parser."""
    from ..commands.budgets import add_budget_commands

    p = subparsers.add_parser("usage", help="spend and tokens from the usage ledger")
    p.add_argument("--since", default="30d", help="today, month, 7d, 2026-11-01, ... (default 30d)")
    p.add_argument("--until", default=None)
    p.add_argument("--by", default="provider", help="comma list: provider, model, feature, ...")
    p.add_argument("--provider")
    p.add_argument("--model", help="the model name as the provider knows it")
    p.add_argument("--feature")
    p.add_argument(
        "--scope", choices=("me", "team", "all"), help="a shared ledger's rows: mine (default), "
        "my team's or everyone's",
    )  # fmt: skip
    p.add_argument("--csv", metavar="PATH", help="also export the matching rows as CSV")
    p.add_argument("--parquet", metavar="PATH", help="also export the matching rows as Parquet")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_usage)

    prices = subparsers.add_parser("prices", help="the price table")
    psub = prices.add_subparsers(dest="prices_command", required=True)
    p = psub.add_parser("show", help="all prices, or one model's (provider:model)")
    p.add_argument("model", nargs="?")
    p.set_defaults(func=cmd_prices_show)
    p = psub.add_parser("update", help="install a validated price override file")
    p.add_argument("--from", dest="source", required=True, metavar="FILE")
    p.set_defaults(func=cmd_prices_update)

    budgets = subparsers.add_parser("budgets", help="spend limits")
    budgets.set_defaults(func=cmd_budgets)
    add_budget_commands(budgets.add_subparsers(dest="budgets_command", required=True))

    cache = subparsers.add_parser("cache", help="the response cache")
    csub = cache.add_subparsers(dest="cache_command", required=True)
    p = csub.add_parser("stats", help="entries, size, hits and money saved")
    p.set_defaults(func=cmd_cache_stats)
    p = csub.add_parser("clear", help="remove every cached response")
    p.set_defaults(func=cmd_cache_clear)
