"""``jupyter byok batches list|status|cancel|fetch``: the work is in
:mod:`jupyter_byok.commands.batches`; this module prints what it returns."""

from __future__ import annotations

import argparse
from typing import Any

from .render import out

__all__ = ["register"]


def cmd_batches(args: argparse.Namespace) -> int:
    from ..commands.batches import run_batches

    out(run_batches(args))
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    from ..commands.batches import add_batch_commands

    batches = subparsers.add_parser("batches", help="provider batches: list, status, cancel, fetch")
    batches.set_defaults(func=cmd_batches)
    add_batch_commands(batches.add_subparsers(dest="batches_command", required=True))
