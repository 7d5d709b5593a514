"""``jupyter byok ledger migrate | status | replay | budgets``: the shared ledger (PostgreSQL)
in a terminal.

``migrate --to URL`` copies the local ledger into a shared one: idempotent (rows already
there are skipped by id) and resumable (a watermark in the local ledger moves after each
committed batch). Budgets across servers are set here by whoever may write the
``budgets`` table (the hub admin's role; see docs/jupyterhub.md).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ..errors import ConfigError
from .render import out

__all__ = ["register"]


def _url(args: argparse.Namespace) -> str:
    url = getattr(args, "to", None) or os.environ.get("JUPYTER_BYOK_LEDGER_URL")
    if not url:
        raise ConfigError(
            "no shared ledger: give --to postgresql://USER@HOST/DB or set JUPYTER_BYOK_LEDGER_URL"
        )
    from ..ledger.pg import check_url

    return check_url(url)


def cmd_migrate(args: argparse.Namespace) -> int:
    from ..ledger import Ledger, ledger_path
    from ..ledger.pg import Database, redact_url
    from ..ledger.shared import copy_ledger

    src = Ledger(args.source or ledger_path())
    if not src.path.exists():
        raise ConfigError(f"no local ledger at {src.path}: nothing to migrate")
    db = Database(_url(args))

    def progress(upto: int, copied: int) -> None:
        if args.verbose:
            out(f"  up to local row {upto:,}: {copied:,} new")

    copied = copy_ledger(src, db, batch=args.batch, progress=progress)
    total = src.count()
    out(
        f"copied {copied:,} new row(s) of {total:,} from {src.path} to {redact_url(db.url)} "
        "(rows already there were skipped)"
    )
    db.close()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ..ledger.shared import SharedLedger

    led = SharedLedger(_url(args))
    try:
        led.check_writable()
        out(json.dumps(led.health(), indent=2))
    finally:
        led.close()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from ..ledger.shared import SharedLedger

    led = SharedLedger(_url(args))
    try:
        led.check_writable()
        health = led.health()
        if not health["reachable"]:
            raise ConfigError(f"the shared ledger cannot be reached: {health['last_error']}")
        out(f"spooled rows left: {health['spooled']}")
    finally:
        led.close()
    return 0


def _budget_args(args: argparse.Namespace) -> dict[str, Any]:
    given = [(s, getattr(args, s)) for s in ("user", "team", "key") if getattr(args, s)]
    if len(given) > 1:
        raise ConfigError("a budget has one scope: give only one of --user, --team, --key")
    scope, target = given[0] if given else ("total", None)
    return {"scope": scope, "target": target}


def cmd_budgets_set(args: argparse.Namespace) -> int:
    from ..ledger.pg import Database
    from ..team_budgets import set_budget

    db = Database(_url(args))
    with db.session() as conn:
        b = set_budget(
            conn, args.period, args.amount, warn_at=args.warn_at, offline=args.offline,
            **_budget_args(args),
        )  # fmt: skip
    out(f"budget {b.name}: ${b.limit_usd} per {b.period} across servers (offline: {b.offline})")
    return 0


def cmd_budgets_list(args: argparse.Namespace) -> int:
    from ..ledger.pg import Database
    from ..ledger.reserve import list_budgets

    db = Database(_url(args))
    with db.session() as conn:
        items = [b.to_json() for b in list_budgets(conn)]
    out(json.dumps(items, indent=2))
    return 0


def cmd_budgets_remove(args: argparse.Namespace) -> int:
    from ..ledger.pg import Database
    from ..team_budgets import remove_budget

    db = Database(_url(args))
    with db.session() as conn:
        if not remove_budget(conn, args.name):
            raise ConfigError(f"no budget {args.name!r}: see `jupyter byok ledger budgets list`")
    out(f"removed budget {args.name}")
    return 0


def register(subparsers: Any) -> None:
    led = subparsers.add_parser("ledger", help="the shared usage ledger (PostgreSQL)")
    lsub = led.add_subparsers(dest="ledger_cmd", required=True)
    p = lsub.add_parser("migrate", help="copy the local ledger into a shared one (resumable)")
    p.add_argument("--to", help="postgresql://USER@HOST:PORT/DB (default: JUPYTER_BYOK_LEDGER_URL)")
    p.add_argument("--source", help="the local ledger file (default: this user's)")
    p.add_argument("--batch", type=int, default=5000, help="rows per transaction")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_migrate)
    p = lsub.add_parser("status", help="backend, reachability, spooled rows, last error")
    p.add_argument("--to", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_status)
    p = lsub.add_parser("replay", help="copy rows spooled during an outage into the database")
    p.add_argument("--to", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_replay)
    b = lsub.add_parser("budgets", help="budgets across servers (user, team, key or total)")
    bsub = b.add_subparsers(dest="budgets_cmd", required=True)
    p = bsub.add_parser("set", help="add or replace a budget across servers")
    p.add_argument("period", choices=("day", "month"))
    p.add_argument("amount", help="US dollars, e.g. 50")
    p.add_argument("--user")
    p.add_argument("--team")
    p.add_argument("--key", help="PROVIDER@NAME, e.g. openai@default")
    p.add_argument("--warn-at", type=float, default=0.8)
    p.add_argument(
        "--offline",
        choices=("block", "allow"),
        default="block",
        help="while the database is unreachable: block calls (default) or allow with a warning",
    )
    p.add_argument("--to", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_budgets_set)
    p = bsub.add_parser("list", help="budgets across servers")
    p.add_argument("--to", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_budgets_list)
    p = bsub.add_parser("remove", help="remove a budget across servers by name")
    p.add_argument("name")
    p.add_argument("--to", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_budgets_remove)
