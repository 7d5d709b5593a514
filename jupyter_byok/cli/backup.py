"""``jupyter byok backup FILE`` and ``jupyter byok restore FILE``.

The passphrase comes from ``JUPYTER_BYOK_BACKUP_PASSPHRASE`` (automation) or a hidden
prompt (asked twice for a backup); never from the command line, where it would land in
shell history and ``ps``. Failures are one line on stderr, exit 1, nothing written.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from ..errors import ByokError
from .render import out as _out

__all__ = ["register"]

ENV = "JUPYTER_BYOK_BACKUP_PASSPHRASE"


def _passphrase(confirm: bool) -> str:
    value = os.environ.get(ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise ByokError(
            f"no passphrase: run this in a terminal (hidden prompt) or set {ENV}; "
            "a passphrase is never taken from the command line"
        )
    first = getpass.getpass("Backup passphrase (input hidden): ")
    if confirm:
        again = getpass.getpass("The same passphrase again: ")
        if again != first:
            raise ByokError("the two passphrases differ; nothing was written")
    if not first.strip():
        raise ByokError("the passphrase is empty; nothing was written")
    return first


def _line(kind: str, counts: dict[str, Any]) -> str:
    parts = [f"{counts[k]} {k}" for k in ("added", "same", "conflict", "replaced") if counts[k]]
    text = f"{kind}: {', '.join(parts) or 'none'}"
    if counts.get("conflicts"):
        text += f" (kept as here: {', '.join(counts['conflicts'])})"
    return text


def cmd_backup(args: argparse.Namespace) -> int:
    from ..backup import create_backup, passphrase_warning

    passphrase = _passphrase(confirm=True)
    warning = passphrase_warning(passphrase)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    result = create_backup(
        args.file, passphrase, with_models=args.with_models, label=args.label, force=args.force
    )
    c = result["counts"]
    _out(f"wrote {result['path']} ({result['bytes']:,} bytes, mode 0600)")
    _out(
        f"{c['keys']} keys, {c['ledger_rows']:,} ledger rows, {c['budgets']} budgets, "
        f"{c['aliases']} aliases, {c['endpoints']} endpoints, {c['local_models']} local models"
        + (f" ({c['model_files']} model files)" if c["model_files"] else "")
        + (", price overrides" if c["price_overrides"] else "")
    )
    _out("keep the passphrase safe: without it the backup cannot be opened")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from ..backup import restore_backup

    passphrase = _passphrase(confirm=False)
    report = restore_backup(args.file, passphrase, replace=args.replace)
    src = report["source"]
    _out(f"restored from {args.file} (made on {src['machine']}, {src['created']})")
    _out(_line("keys", report["keys"]))
    _out(_line("settings", report["settings"]))
    _out(_line("budgets", report["budgets"]))
    if report["prices"]:
        _out(f"price overrides: {report['prices']}")
    if report["local_registry"]:
        _out(f"registry of pulled local models: {report['local_registry']}")
    if report["model_files"]:
        _out("model files: " + ", ".join(f"{n} {k}" for k, n in report["model_files"].items()))
    led = report["ledger"]
    _out(f"ledger rows: {led['added']:,} added, {led['present']:,} already here")
    if not args.replace and any(report[k]["conflict"] for k in ("keys", "settings", "budgets")):
        _out("conflicting items were kept as they are here; --replace takes the backup's")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``backup`` and ``restore`` to the ``jupyter byok`` command."""
    p = subparsers.add_parser(
        "backup", help="keys, ledger and settings in one file sealed with a passphrase"
    )
    p.add_argument("file", help="the backup file to write (mode 0600)")
    p.add_argument(
        "--with-models", action="store_true", help="also the registered local model files"
    )
    p.add_argument("--label", help="a name for this machine in the backup (default: hostname)")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_backup)
    p = subparsers.add_parser(
        "restore", help="merge a backup into this machine (checks everything first)"
    )
    p.add_argument("file", help="a file written by `jupyter byok backup`")
    p.add_argument(
        "--replace",
        action="store_true",
        help="where an item differs here, take the backup's (default: keep this machine's)",
    )
    p.set_defaults(func=cmd_restore)
