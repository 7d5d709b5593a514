"""Output for ``jupyter byok``: one line at a time, flushed, and the shared table layout."""

from __future__ import annotations

from collections.abc import Sequence

from ..commands.render import table

__all__ = ["out", "print_table"]


def out(text: str = "") -> None:
    print(text, flush=True)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    out(table(rows))
