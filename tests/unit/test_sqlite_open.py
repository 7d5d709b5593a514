"""Processes that open a new SQLite file of ours (ledger, cache) at the same moment all get it.

Switching a new file to WAL needs it to itself, and SQLite answers "database is locked"
at once (without waiting out the busy timeout) to the others: before the fix about one
open in 30 failed here, and a call was refused with "the usage ledger cannot take rows".
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: kind: (what it imports, how it opens the file at ``path``)
OPEN = {
    "ledger": (
        "from jupyter_byok.ledger import Ledger",
        "sys.exit(1 if Ledger(path).check_writable(probe_write=True) else 0)",
    ),
    "cache": (
        "from jupyter_byok.cache import ContentCache",
        "ContentCache(path).put('k', {'v': 1})",
    ),
}
OPENER = """
import sys, time
{imports}
path, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:  # imported and waiting: all open at the same moment
    pass
{opens}
"""


@pytest.mark.parametrize("kind", sorted(OPEN))
def test_eight_processes_opening_a_new_file_at_once_all_get_it(kind: str, tmp_path: Path) -> None:
    imports, opens = OPEN[kind]
    opener = OPENER.format(imports=imports, opens=opens)
    failed = []
    for round_ in range(12):
        path = tmp_path / f"round{round_}" / f"{kind}.sqlite3"
        path.parent.mkdir()
        start = str(time.time() + 1.0)  # all eight have imported by then
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", opener, str(path), start],
                stderr=subprocess.PIPE, text=True,
            )
            for _ in range(8)
        ]  # fmt: skip
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            if proc.returncode:
                failed.append(err.strip().splitlines()[-1] if err.strip() else "exit 1")
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert failed == []
