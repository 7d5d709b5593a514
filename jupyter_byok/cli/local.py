"""``jupyter byok local add|pull|list|remove|default|set|test``: the local model manager.

The subcommands and the work are in :mod:`jupyter_byok.commands.local` (shared with
``%byok local``); this module prints what they return.
"""

from __future__ import annotations

import argparse
from typing import Any

from .render import out

__all__ = ["register"]


def cmd_local(args: argparse.Namespace) -> int:
    from ..commands.local import run_local

    out(run_local(args))
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``local add|pull|list|remove|default|set|test`` to the ``jupyter byok`` command."""
    from ..commands.local import add_local_commands

    local = subparsers.add_parser("local", help="local GGUF models: pull, list, remove, default")
    local.set_defaults(func=cmd_local)
    add_local_commands(local.add_subparsers(dest="local_command", required=True))
