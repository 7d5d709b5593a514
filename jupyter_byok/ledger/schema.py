"""The ledger's row format: columns, the row, money in picodollars, the ordered migrations.

Invariants: one row per attempt (ok, error, timeout, cancelled, cache_hit, blocked);
rows are only ever inserted, keyed by a client-made ``id`` (``INSERT OR IGNORE``, so a replay
after a crash never double-counts); prompts and keys are never stored.

Money is stored as integer picodollars (1e-12 USD): exact for every rate in the price table
and for xAI's ticks (1e-10 USD), and summable in SQL. Times are integer microseconds since
the epoch, UTC; days (rollups, "today", daily budgets) are UTC days.

A ``rollup`` table holds per-day sums by provider/model/feature/status for every row up to
a watermark (``meta.rollup_upto``, a rowid); queries add the few rows past it. The writer of
every ``FOLD_EVERY``-th row folds the rows past the watermark into the rollup
(:func:`fold_into_rollup`, called by the store), so an append itself maintains no aggregate.
A migration's name (``m00N_...``) is its identity; :func:`migrate` applies them in order.
"""

from __future__ import annotations

import random
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..errors import LedgerError
from .who import who

__all__ = [
    "COLUMNS",
    "DIMENSIONS",
    "FOLD_EVERY",
    "MEASURES",
    "MIGRATIONS",
    "ROLLUP_DIMS",
    "STATUSES",
    "LedgerRow",
    "fold_into_rollup",
    "migrate",
    "new_id",
]

#: ``blocked``: a budget stopped the call before any request was sent
STATUSES = frozenset({"ok", "error", "timeout", "cancelled", "cache_hit", "blocked"})
PICO = 10**12

#: dimensions a caller may filter or group by
DIMENSIONS = (
    "provider", "model", "key_name", "feature", "notebook", "cell_id", "pipeline", "node",
    "status", "error_type", "cost_source", "price_version", "request_id",
    "user_name", "team", "server",
)  # fmt: skip
ROLLUP_DIMS = ("provider", "model", "feature", "status")
MEASURES = (
    "input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens",
    "output_tokens", "reasoning_tokens",
)  # fmt: skip

COLUMNS = (
    "id", "request_id", "attempt", "ts", "ts_end", "provider", "model", "key_name", "feature",
    "notebook", "cell_id", "pipeline", "node", "status", "http_status", "error_type",
    "response_id", "input_tokens", "cached_input_tokens", "cache_write_tokens",
    "cache_write_1h_tokens", "output_tokens", "reasoning_tokens", "search_credits",
    "cost_pico", "cost_source", "price_version", "latency_s", "ttft_s", "stream", "cache_hit",
    "saved_pico", "user_name", "team", "server",
)  # fmt: skip
INSERT = (
    f"INSERT OR IGNORE INTO attempts ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)


# --------------------------------------------------------------------------- the row
def new_id() -> str:
    """A 32-hex-digit id that sorts by time: 12 digits of epoch milliseconds, then 80
    random bits (``random`` is reseeded in a forked child). Ids of new rows land at the end of the ``id`` and ``request_id`` indexes
    instead of on random pages, so an append touches the same few pages (uuid4 ids would
    dirty a random leaf page per row in a large ledger)."""
    return f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


@dataclass
class LedgerRow:
    """One provider attempt. Times are epoch seconds; money is ``Decimal`` USD."""

    provider: str
    model: str
    status: str
    id: str = field(default_factory=lambda: new_id())
    request_id: str = ""
    attempt: int = 1
    ts_start: float | None = None
    ts_end: float | None = None
    key_name: str | None = None
    feature: str = "api"
    notebook: str | None = None
    cell_id: str | None = None
    pipeline: str | None = None
    node: str | None = None
    http_status: int | None = None
    error_type: str | None = None
    response_id: str | None = None
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    search_credits: float = 0.0
    cost_usd: Decimal | None = None
    cost_source: str = "unknown"
    price_version: str = ""
    latency_s: float | None = None
    ttft_s: float | None = None
    stream: bool = False
    cache_hit: bool = False
    saved_usd: Decimal | None = None
    #: who and where (``None``: this process's, see :func:`.who.who`)
    user_name: str | None = None
    team: str | None = None
    server: str | None = None

    def values(self) -> tuple[Any, ...]:
        if self.status not in STATUSES:
            raise LedgerError(
                f"ledger status {self.status!r} is not one of {', '.join(sorted(STATUSES))}"
            )
        end = time.time() if self.ts_end is None else self.ts_end
        start = self.ts_start if self.ts_start is not None else end - (self.latency_s or 0.0)
        user, team, server = who()
        return (
            self.id,
            self.request_id or self.id,
            self.attempt,
            round(start * 1e6),
            round(end * 1e6),
            self.provider,
            self.model,
            self.key_name,
            self.feature,
            self.notebook,
            self.cell_id,
            self.pipeline,
            self.node,
            self.status,
            self.http_status,
            self.error_type,
            self.response_id,
            self.input_tokens,
            self.cached_input_tokens,
            self.cache_write_tokens,
            self.cache_write_1h_tokens,
            self.output_tokens,
            self.reasoning_tokens,
            self.search_credits,
            to_pico(self.cost_usd),
            self.cost_source,
            self.price_version,
            self.latency_s,
            self.ttft_s,
            int(self.stream),
            int(self.cache_hit),
            to_pico(self.saved_usd),
            self.user_name or user,
            self.team or team,
            self.server or server,
        )


def to_pico(value: Decimal | None) -> int | None:
    if value is None:
        return None
    return int((Decimal(value) * PICO).to_integral_value())


def from_pico(value: int | None) -> Decimal:
    return Decimal(value or 0) / Decimal(PICO)


# ------------------------------------------------------------------------- migrations
Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register ``fn`` as the next migration; its name (``m00N_...``) is its identity."""
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_attempts(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE IF NOT EXISTS attempts (
            rowid INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            request_id TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 1,
            ts INTEGER NOT NULL,
            ts_end INTEGER NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            key_name TEXT,
            feature TEXT NOT NULL DEFAULT 'api',
            notebook TEXT,
            cell_id TEXT,
            pipeline TEXT,
            node TEXT,
            status TEXT NOT NULL,
            http_status INTEGER,
            error_type TEXT,
            response_id TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            cached_input_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            search_credits REAL NOT NULL DEFAULT 0,
            cost_pico INTEGER,
            cost_source TEXT NOT NULL DEFAULT 'unknown',
            price_version TEXT NOT NULL DEFAULT '',
            latency_s REAL,
            ttft_s REAL,
            stream INTEGER NOT NULL DEFAULT 0,
            cache_hit INTEGER NOT NULL DEFAULT 0,
            saved_pico INTEGER
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS attempts_ts ON attempts (ts)")
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    # identifies this database (a derived snapshot of an older, deleted ledger is not reused)
    db.execute("INSERT OR IGNORE INTO meta VALUES ('ledger_uuid', ?)", (uuid.uuid4().hex,))
    db.execute("CREATE INDEX IF NOT EXISTS attempts_request ON attempts (request_id)")


@migration
def m002_daily_rollup(db: sqlite3.Connection) -> None:
    db.execute(
        f"""CREATE TABLE IF NOT EXISTS rollup (
            day TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
            feature TEXT NOT NULL, status TEXT NOT NULL,
            n INTEGER NOT NULL, unknown_n INTEGER NOT NULL,
            {", ".join(f"{m} INTEGER NOT NULL" for m in MEASURES)},
            search_credits REAL NOT NULL, cost_pico INTEGER NOT NULL, saved_pico INTEGER NOT NULL,
            PRIMARY KEY (day, provider, model, feature, status)
        ) WITHOUT ROWID"""
    )
    # every row so far (none in a new ledger)
    db.execute("DELETE FROM rollup")
    db.execute("INSERT OR REPLACE INTO meta VALUES ('rollup_upto', '0')")
    fold_into_rollup(db)


@migration
def m003_blocked_status(db: sqlite3.Connection) -> None:
    """Budget blocks were recorded as ``budget_blocked`` before 0.1.0; the name is ``blocked``.
    (No ``blocked`` row can exist before this runs, so no rollup key collides.)"""
    db.execute("UPDATE attempts SET status = 'blocked' WHERE status = 'budget_blocked'")
    db.execute("UPDATE rollup SET status = 'blocked' WHERE status = 'budget_blocked'")


@migration
def m004_rollup_folded(db: sqlite3.Connection) -> None:
    """The rollup was kept by an insert trigger (about a fifth of an append); it is now
    folded every FOLD_EVERY rows. A ledger kept by the trigger is complete up to now."""
    db.execute("DROP TRIGGER IF EXISTS attempts_rollup")
    (last,) = db.execute("SELECT ifnull(max(rowid), 0) FROM attempts").fetchone()
    db.execute("INSERT OR IGNORE INTO meta VALUES ('rollup_upto', ?)", (str(last),))


@migration
def m005_batches(db: sqlite3.Connection) -> None:
    """Provider batches (:mod:`jupyter_byok.batch`) and their items, so that a map in batch
    mode survives a kernel restart. A batch item's ledger row is an ordinary ``attempts`` row
    with feature ``batch``; ``batch_items.ledger_id`` links the two. Items keep the answer
    text until the batch is forgotten (prompts are never stored)."""
    db.execute(
        """CREATE TABLE IF NOT EXISTS batches (
            id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, part INTEGER NOT NULL,
            pipeline TEXT, node TEXT, notebook TEXT, provider TEXT NOT NULL,
            model TEXT NOT NULL, key_name TEXT, provider_batch_id TEXT, state TEXT NOT NULL,
            total INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL,
            updated INTEGER NOT NULL, fetched INTEGER NOT NULL DEFAULT 0, message TEXT
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS batches_fingerprint ON batches (fingerprint)")
    db.execute(
        """CREATE TABLE IF NOT EXISTS batch_items (
            batch_id TEXT NOT NULL, custom_id TEXT NOT NULL, row_pos INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending', text TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
            cost_pico INTEGER, error TEXT, ledger_id TEXT,
            PRIMARY KEY (batch_id, custom_id)
        ) WITHOUT ROWID"""
    )


#: the writer of every FOLD_EVERY-th row folds the rows past the watermark into the rollup
FOLD_EVERY = 2048
UPTO = "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'rollup_upto')"
DAY_OF_TS = "strftime('%Y-%m-%d', ts / 1000000, 'unixepoch')"


def fold_into_rollup(db: sqlite3.Connection) -> None:
    """Add the rows past the watermark to the rollup and move the watermark (the caller
    holds the write transaction)."""
    upd = ", ".join(f"{m} = {m} + excluded.{m}" for m in MEASURES)
    db.execute(
        f"""INSERT INTO rollup SELECT {DAY_OF_TS}, provider, model, feature, status, count(*),
            sum(cost_pico IS NULL), {", ".join(f"sum({m})" for m in MEASURES)},
            sum(search_credits), ifnull(sum(cost_pico), 0), ifnull(sum(saved_pico), 0)
            FROM attempts WHERE rowid > {UPTO} GROUP BY 1, 2, 3, 4, 5
            ON CONFLICT (day, provider, model, feature, status) DO UPDATE SET
                n = n + excluded.n, unknown_n = unknown_n + excluded.unknown_n, {upd},
                search_credits = search_credits + excluded.search_credits,
                cost_pico = cost_pico + excluded.cost_pico,
                saved_pico = saved_pico + excluded.saved_pico"""
    )
    db.execute(
        "UPDATE meta SET value = (SELECT CAST(ifnull(max(rowid), 0) AS TEXT) FROM attempts) "
        "WHERE key = 'rollup_upto'"
    )


# --------------------------------------------- who and where (m006+, shared ledgers)
@migration
def m006_who_where(db: sqlite3.Connection) -> None:
    """Rows carry the user, team and server that made them (a shared PostgreSQL ledger
    gathers many servers; see :mod:`.pg`). Older rows are this machine's own."""
    have = {r[1] for r in db.execute("PRAGMA table_info(attempts)")}
    for col in ("user_name", "team", "server"):
        if col not in have:
            db.execute(f"ALTER TABLE attempts ADD COLUMN {col} TEXT")


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the migrations this database lacks, in order, each in its own transaction."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    applied: list[str] = []
    for fn in MIGRATIONS:
        name = fn.__name__
        if db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            # another process may have applied it while we waited for the write lock
            if not db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                fn(db)
                db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
                applied.append(name)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return applied
