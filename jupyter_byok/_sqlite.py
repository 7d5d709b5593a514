"""What every SQLite file of ours (the ledger, the response cache) needs when it opens."""

from __future__ import annotations

import sqlite3
import time


def use_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Put the database in WAL mode (a no-op once it is).

    Switching needs the file to itself, and SQLite answers "database is locked" at once,
    without waiting out the busy timeout, to the other processes that open a new file at
    the same moment. So this waits, with backoff, for up to ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy or time.monotonic() + delay >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
