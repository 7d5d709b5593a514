"""usage() frames: the Arrow path (the ADBC driver in a child process) equals the sqlite3 path.

The sqlite3 path (one Python tuple per row, then ``_convert``) is the reference; the Arrow
path must give the same columns, dtypes, categories and values, or hand the read back to it.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

# adbc_driver_sqlite and pyarrow are required: a missing one fails the import, never skips
import adbc_driver_sqlite  # noqa: F401
import pandas as pd
import pyarrow  # noqa: F401
import pytest

from jupyter_byok.ledger import Ledger, LedgerRow
from jupyter_byok.ledger import frame as lf
from jupyter_byok.ledger.frame import FrameReader

PROVIDERS = ["openai", "Anthropic", "ßeta", "émoji😀", "", "zz", "Zz"]


def make_rows(n: int, start: int = 0, bare_until: int = 0) -> list[LedgerRow]:
    """Rows with every optional column varied; rows before ``bare_until`` leave them NULL."""
    rng = random.Random(start)
    out = []
    for i in range(start, start + n):
        bare = i < bare_until
        t = 1_760_000_000 + i * 37.25
        out.append(
            LedgerRow(
                provider=rng.choice(PROVIDERS),
                model=rng.choice(["gpt-4o-mini", "o3", "grok-4.3"]),
                status=rng.choice(["ok", "ok", "error", "cache_hit"]),
                request_id=f"r{i // 2}",
                attempt=1 + i % 2,
                ts_start=t,
                ts_end=t + 0.5,
                key_name=None if bare or i % 3 else f"k{i % 5}",
                feature=rng.choice(["api", "magic", "pipeline"]),
                notebook=None if bare else rng.choice(["a.ipynb", "ü.ipynb", "Z.ipynb", None]),
                cell_id=None if bare else f"c{i}",
                pipeline=None if bare else "p",
                node=None if bare else rng.choice(["n1", "n2", None]),
                http_status=None if bare else rng.choice([200, 429, None]),
                error_type=None if bare else rng.choice([None, "RateLimitError"]),
                response_id=None if bare or i % 4 == 0 else f"resp{i}",
                input_tokens=rng.randrange(10**6),
                cached_input_tokens=rng.randrange(100),
                output_tokens=rng.randrange(10**4),
                reasoning_tokens=rng.randrange(3),
                search_credits=rng.choice([0.0, 1.0, 2.5]),
                cost_usd=None if bare or i % 7 == 0 else Decimal(rng.randrange(10**9)) / 10**12,
                cost_source=rng.choice(["table", "unknown"]),
                price_version=rng.choice(["", "2026-11"]),
                latency_s=None if bare else rng.random(),
                ttft_s=None if bare or i % 2 else rng.random() / 10,
                stream=rng.random() < 0.5,
                cache_hit=rng.random() < 0.1,
                saved_usd=None if bare else Decimal(i) / 10**6,
            )
        )
    return out


def assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    for col in want.columns:
        a, b = got[col].dtype, want[col].dtype
        assert repr(a) == repr(b), (col, a, b)
        if isinstance(b, pd.CategoricalDtype):
            assert isinstance(a, pd.CategoricalDtype)
            assert repr(a.categories.dtype) == repr(b.categories.dtype), col
            assert list(a.categories) == list(b.categories), col
            assert got[col].cat.codes.dtype == want[col].cat.codes.dtype, col
    pd.testing.assert_frame_equal(got, want, check_exact=True, check_categorical=True)


def reference(led: Ledger, after: int = 0) -> tuple[pd.DataFrame, int]:
    return FrameReader().read_sqlite(led, after)


def arrow(
    led: Ledger, after: int = 0, reader: FrameReader | None = None
) -> tuple[pd.DataFrame, int] | None:
    return (reader or FrameReader()).read_arrow(led, after)


@pytest.fixture
def small_batches() -> FrameReader:
    """Many driver batches on a small ledger: type inference sees only the first one."""
    return FrameReader(batch_rows=256)


@pytest.mark.parametrize("parts", [1, 2])
def test_arrow_read_equals_sqlite3_read(
    tmp_path: Path, small_batches: FrameReader, monkeypatch: pytest.MonkeyPatch, parts: int
) -> None:
    reader = replace(small_batches, arrow_part_rows=1000 if parts == 2 else 10**9)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    led = Ledger(tmp_path / "l.db")
    # optional columns NULL for the first 1,500 rows (several batches), set afterwards
    led.record_many(make_rows(3000, bare_until=1500))
    for after in (0, 1000, 2999):
        got = arrow(led, after, reader)
        assert got is not None
        want = reference(led, after)
        assert got[1] == want[1] == 3000
        assert_same(got[0], want[0])


def test_arrow_read_of_all_null_columns(tmp_path: Path, small_batches: FrameReader) -> None:
    led = Ledger(tmp_path / "l.db")
    led.record_many([LedgerRow("openai", "o3", "ok", ts_start=1e9 + i) for i in range(700)])
    got = arrow(led, 0, small_batches)
    assert got is not None
    assert_same(got[0], reference(led)[0])
    assert got[0]["key_name"].isna().all() and got[0]["http_status"].isna().all()


def test_the_driver_alone_fails_on_null_then_text(tmp_path: Path) -> None:
    """Why the typed first row exists: without it, a column NULL in the first batch is
    inferred as int64 and the first text value after that batch fails the whole read."""
    led = Ledger(tmp_path / "l.db")
    led.record_many(make_rows(600, bare_until=300))
    plain = subprocess.run(
        [sys.executable, "-c", lf.CHILD, led.path.resolve().as_uri() + "?mode=ro",
         "SELECT key_name FROM attempts ORDER BY rowid", "256", "1000"],
        capture_output=True, check=False,
    )  # fmt: skip
    assert plain.returncode != 0 and b"mismatch" in plain.stderr.lower()
    assert arrow(led) is not None


@pytest.mark.parametrize("row", [5, 1100], ids=["first-batch", "later-batch"])
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("input_tokens", "lots"),  # text in an INTEGER column
        ("input_tokens", 1.5),  # a real number in an INTEGER column
        ("cost_pico", "n/a"),
        ("cost_pico", 2.5),
        ("attempt", "second"),
        ("latency_s", "slow"),  # text in a REAL column
        ("notebook", b"\x00\xffraw"),  # BLOBs in TEXT columns
        ("key_name", b"plain"),
    ],
)
def test_mixed_types_fall_back_to_sqlite3(
    tmp_path: Path,
    small_batches: FrameReader,
    column: str,
    value: Any,
    row: int,
) -> None:
    reader = replace(small_batches, arrow_min_rows=100)
    led = Ledger(tmp_path / "l.db", frames=reader)
    led.record_many(make_rows(1200, bare_until=600))
    with sqlite3.connect(led.path) as raw:
        raw.execute(f"UPDATE attempts SET {column} = ? WHERE rowid = ?", (value, row))
    assert arrow(led, 0, reader) is None  # never silently different
    assert_same(led.frame(), reference(led)[0])
    assert reader.arrow_reads == [False, False]  # tried, and handed back to sqlite3


def test_cold_read_through_arrow_then_snapshot(tmp_path: Path) -> None:
    reader = FrameReader(arrow_min_rows=100)
    used = reader.arrow_reads  # one entry per Arrow read tried: whether it gave the rows
    led = Ledger(tmp_path / "l.db", frames=reader)
    led.record_many(make_rows(lf.REFRESH_ROWS + 300, bare_until=2000))
    want = reference(led)[0]
    cold = led.frame()
    assert used == [True]
    assert_same(cold, want)
    assert lf.snapshot_path(led).exists()
    warm = led.frame()  # the snapshot alone
    assert used == [True]
    assert_same(warm, want)
    # filters apply to an Arrow-read frame as to any other
    lf.snapshot_path(led).unlink()
    since = 1_760_000_000 + 1000 * 37.25
    some = led.frame(provider=["ßeta", ""], since=since)
    assert used == [True, True]
    cutoff = pd.Timestamp(int(since * 1e6), unit="us", tz="UTC")
    keep = want["provider"].isin(["ßeta", ""]) & (want["ts"] >= cutoff)
    assert_same(some, want[keep.to_numpy()].reset_index(drop=True))
    # a few new rows come through sqlite3, many through Arrow; both join the snapshot alike
    led.record_many(make_rows(3, start=10**6))
    assert len(led.frame()) == len(want) + 3 and used == [True, True]
    led.record_many(make_rows(300, start=2 * 10**6, bare_until=2 * 10**6 + 150))
    joined = led.frame()
    assert used == [True, True, True] and len(joined) == len(want) + 303
    reader.arrow = False
    assert_same(joined, led.frame())


def test_failing_child_or_missing_driver_fall_back(tmp_path: Path) -> None:
    reader = FrameReader(arrow_min_rows=100)
    led = Ledger(tmp_path / "l.db", frames=reader)
    led.record_many(make_rows(400, bare_until=200))
    want = reference(led)[0]
    reader.child = "import sys; sys.exit(3)"
    assert arrow(led, 0, reader) is None
    assert_same(led.frame(), want)
    assert reader.arrow_reads == [False, False]
    reader.arrow = False
    assert_same(led.frame(), want)
    assert reader.arrow_reads == [False, False]  # not tried without the driver


def test_arrow_read_leaves_this_process_locks_alone(tmp_path: Path) -> None:
    """The driver has its own copy of SQLite; in this process its unlocks would drop our
    sqlite3 connection's POSIX locks. In a child process they cannot."""
    led = Ledger(tmp_path / "l.db")
    led.record_many(make_rows(500))
    probe = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
        "try:\n    c.execute('BEGIN IMMEDIATE')\nexcept sqlite3.OperationalError:\n"
        "    sys.exit(0)\nsys.exit(1)\n"
    )
    writer = sqlite3.connect(led.path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # this process holds the write lock
    writer.execute("INSERT INTO meta VALUES ('probe', 'x')")
    try:
        got = arrow(led)  # WAL: a reader does not wait for the writer
        assert got is not None and len(got[0]) == 500
        locked = subprocess.run([sys.executable, "-c", probe, str(led.path)], check=False)
        assert locked.returncode == 0, "another process could take our write lock"
    finally:
        writer.execute("ROLLBACK")
        writer.close()


WRITER = """
import sys, time
from jupyter_byok.ledger import Ledger, LedgerRow
led = Ledger(sys.argv[1])
for i in range(int(sys.argv[2])):
    led.record_many([LedgerRow("openai", "o3", "ok", key_name=f"k{i}", ttft_s=0.1 * (i % 2))
                     for _ in range(50)])
    time.sleep(0.002)
"""


def test_arrow_read_while_another_process_writes(
    tmp_path: Path, small_batches: FrameReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = replace(small_batches, arrow_part_rows=2000)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    led = Ledger(tmp_path / "l.db")
    led.record_many(make_rows(5000, bare_until=2000))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(led.path), "300"])
    try:
        seen = []
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            got = arrow(led, 0, reader)
            assert got is not None
            frame, last = got
            # every row up to the last one read, in order, none twice
            assert len(frame) == last and frame["id"].is_unique
            seen.append(last)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == 0 and seen == sorted(seen)
    got = arrow(led, 0, reader)
    assert got is not None and got[1] == 5000 + 300 * 50 == led.count()
    assert_same(got[0], reference(led)[0])
    assert led.integrity_check() == "ok"
