"""``jupyter byok usage | prices | budgets | cache``: the ledger and its guard rails in a terminal.

Handlers print plain tables and return an exit code; expected failures raise ``ByokError``
subclasses, which ``jupyter_byok.cli.main`` turns into one line on stderr.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError

__all__ = ["register", "run_budget_command"]


def _out(text: str = "") -> None:
    print(text, flush=True)


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        _out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _split_model(text: str) -> tuple[str, str]:
    provider, sep, model = text.partition(":")
    if not sep or not provider or not model:
        raise ConfigError(f"{text!r} is not provider:model, e.g. openai:gpt-4o-mini")
    return provider, model.split("@", 1)[0]


# --------------------------------------------------------------------------- usage
def cmd_usage(args: argparse.Namespace) -> int:
    from ..ledger import default_ledger, export

    filters = {k: getattr(args, k) for k in ("provider", "model", "feature") if getattr(args, k)}
    by = [b for b in args.by.split(",") if b]
    ledger = default_ledger()
    groups = ledger.summary(by, since=args.since, until=args.until, **filters)
    total = ledger.spend(since=args.since, until=args.until, **filters)
    for path in (args.csv, args.parquet):
        if path:
            _out(f"wrote {export(path, since=args.since, until=args.until, **filters)}")
    if args.json:
        _out(json.dumps({"total_usd": str(total), "groups": groups}, indent=2))
        return 0
    if not groups:
        _out(f"no calls recorded since {args.since}")
        return 0
    head = (*(b.upper() for b in by), "CALLS", "INPUT", "CACHED", "OUTPUT", "COST USD")
    rows: list[tuple[str, ...]] = [head]
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
    _table(rows)
    _out(f"total since {args.since}: ${total}")
    return 0


# -------------------------------------------------------------------------- prices
def cmd_prices_show(args: argparse.Namespace) -> int:
    from .. import pricing

    if args.model:
        provider, model = _split_model(args.model)
        price = pricing.price_for(provider, model)
        if price is None:
            raise ConfigError(
                f"no price for {args.model}: its calls are recorded as cost unknown; "
                "add it with `jupyter byok prices update --from FILE`"
            )
        _out(json.dumps(price, indent=2, default=str))
        return 0
    _out(f"price table {pricing.price_version()} (USD per 1M tokens; Tavily per credit)")
    rows: list[tuple[str, ...]] = [
        ("MODEL", "INPUT", "CACHED", "WRITE 5M", "WRITE 1H", "OUTPUT", "LONG CONTEXT")
    ]
    for m in pricing.list_models():
        lc = m.get("long_context")
        rows.append(
            (
                m["id"],
                m.get("input_per_1m")
                or (f"{m['per_credit']}/credit" if "per_credit" in m else "-"),
                m.get("cached_input_per_1m", "-"),
                m.get("cache_write_5m_per_1m", "-"),
                m.get("cache_write_1h_per_1m", "-"),
                m.get("output_per_1m", "-"),
                f">{lc['threshold']:,}: {lc.get('input')}/{lc.get('output')}" if lc else "-",
            )
        )
    _table(rows)
    return 0


def cmd_prices_update(args: argparse.Namespace) -> int:
    from ..pricing import update_prices

    info = update_prices(args.source)
    _out(f"price override {info['version']} installed: {info['models']} models")
    return 0


# ------------------------------------------------------------------------- budgets
def cmd_budgets_list(args: argparse.Namespace) -> int:
    from .. import budgets
    from ..ledger import default_ledger

    items = budgets.status(default_ledger())
    if args.json:
        _out(json.dumps(items, indent=2))
        return 0
    if not items:
        _out("no budgets; add one with `jupyter byok budgets set day 5`")
        return 0
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
    _table(rows)
    return 0


def cmd_budgets_set(args: argparse.Namespace) -> int:
    from ..budgets import set_budget

    budget = set_budget(
        args.period,
        args.amount,
        provider=args.provider,
        model=args.model,
        feature=args.feature,
        warn_at=args.warn_at,
    )
    _out(f"budget {budget.name}: ${budget.limit_usd}, warning at {float(budget.warn_at):.0%}")
    return 0


def cmd_budgets_remove(args: argparse.Namespace) -> int:
    from ..budgets import remove_budget

    if not remove_budget(args.name):
        raise ConfigError(f"no budget {args.name}; `jupyter byok budgets list` shows them")
    _out(f"removed budget {args.name}")
    return 0


# --------------------------------------------------------------------------- cache
def cmd_cache_stats(args: argparse.Namespace) -> int:
    from ..cache import ResponseCache

    _out(json.dumps(ResponseCache().stats(), indent=2))
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    from ..cache import ResponseCache

    _out(f"removed {ResponseCache().clear()} cached responses")
    return 0


# ------------------------------------------------------------------------ register
def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``usage``, ``prices``, ``budgets`` and ``cache`` to the ``jupyter byok`` parser."""
    p = subparsers.add_parser("usage", help="spend and tokens from the usage ledger")
    p.add_argument("--since", default="30d", help="today, month, 7d, 2026-11-01, ... (default 30d)")
    p.add_argument("--until", default=None)
    p.add_argument("--by", default="provider", help="comma list: provider, model, feature, ...")
    p.add_argument("--provider")
    p.add_argument("--model", help="the model name as the provider knows it")
    p.add_argument("--feature")
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
    bsub = budgets.add_subparsers(dest="budgets_command", required=True)
    p = bsub.add_parser("list", help="budgets and what has been spent against them")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_budgets_list)
    p = bsub.add_parser("set", help="add or replace a budget, e.g. `budgets set day 5`")
    p.add_argument("period", choices=["day", "month", "call"])
    p.add_argument("amount", help="US dollars")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--provider")
    scope.add_argument("--model", help="provider:model")
    scope.add_argument("--feature")
    p.add_argument("--warn-at", default="0.8", help="warn at this fraction (default 0.8)")
    p.set_defaults(func=cmd_budgets_set)
    p = bsub.add_parser("remove", help="remove a budget by name (see `budgets list`)")
    p.add_argument("name")
    p.set_defaults(func=cmd_budgets_remove)

    cache = subparsers.add_parser("cache", help="the response cache")
    csub = cache.add_subparsers(dest="cache_command", required=True)
    p = csub.add_parser("stats", help="entries, size, hits and money saved")
    p.set_defaults(func=cmd_cache_stats)
    p = csub.add_parser("clear", help="remove every cached response")
    p.set_defaults(func=cmd_cache_clear)


def run_budget_command(argv: Sequence[str]) -> None:
    """``%byok budget list | set PERIOD AMOUNT [--provider P] | remove NAME`` in a notebook."""
    parser = argparse.ArgumentParser(prog="%byok", add_help=False)
    register(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(["budgets", *(argv or ["list"])])
    except SystemExit:
        raise ConfigError(
            "use %byok budget list | set day|month|call AMOUNT "
            "[--provider P | --model provider:model | --feature F] [--warn-at 0.8] | remove NAME"
        ) from None
    args.func(args)
