"""The usage ledger: one SQLite row per provider attempt, shared by every process.

Invariants: one row per attempt (ok, error, timeout, cancelled, cache_hit, blocked);
rows are only ever inserted, keyed by a client-made ``id`` (``INSERT OR IGNORE``, so a replay
after a crash never double-counts); a write returns only after ``COMMIT``; prompts and keys
are never stored. Durability: WAL with ``synchronous=NORMAL`` by default, so a committed row
survives any crash of a process (the WAL is synced at checkpoints, not on every commit; only a
power failure or kernel panic can lose the last few commits, never corrupt the file).
``synchronous="FULL"`` syncs on every commit for those who want that too; the engine's
group-commit writer (``_group_commit``) already amortises each sync over many rows.

Money is stored as integer picodollars (1e-12 USD): exact for every rate in the price table
and for xAI's ticks (1e-10 USD), and summable in SQL. Times are integer microseconds since
the epoch, UTC; days (rollups, "today", daily budgets) are UTC days.

A ``rollup`` table holds per-day sums by provider/model/feature/status for every row up to
a watermark (``meta.rollup_upto``, a rowid); queries add the few rows past it, so spend and
chart queries stay fast on millions of rows. The writer of every ``FOLD_EVERY``-th row folds
the rows past the watermark into the rollup in one transaction (rowids only grow: rows are
never deleted), so an append itself maintains no aggregate. Writing never imports pandas; reading into pandas happens in :meth:`frame`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import re
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, LedgerError, LedgerUnavailableError

if TYPE_CHECKING:
    import pandas

__all__ = [
    "STATUSES",
    "Ledger",
    "LedgerRow",
    "export",
    "ledger_health",
    "ledger_path",
    "parse_time",
    "usage",
]

log = logging.getLogger("jupyter_byok")

#: ``blocked``: a budget stopped the call before any request was sent
STATUSES = frozenset({"ok", "error", "timeout", "cancelled", "cache_hit", "blocked"})
PICO = 10**12
DB_NAME = "ledger.sqlite3"
#: filesystems on which SQLite's WAL locking is unsafe (sqlite.org/wal.html)
NETWORK_FS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "lustre", "gpfs", "ceph",
        "glusterfs", "fuse.glusterfs", "fuse.sshfs", "sshfs", "9p", "afs", "beegfs",
        "fuse.s3fs", "fuse.gcsfuse", "ncpfs", "coda", "ocfs2", "gfs2", "panfs", "wekafs",
    }
)  # fmt: skip

#: dimensions a caller may filter or group by
DIMENSIONS = (
    "provider", "model", "key_name", "feature", "notebook", "cell_id", "pipeline", "node",
    "status", "error_type", "cost_source", "price_version", "request_id",
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
    "saved_pico",
)  # fmt: skip
_INSERT = (
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

    def values(self) -> tuple[Any, ...]:
        if self.status not in STATUSES:
            raise LedgerError(
                f"ledger status {self.status!r} is not one of {', '.join(sorted(STATUSES))}"
            )
        end = time.time() if self.ts_end is None else self.ts_end
        start = self.ts_start if self.ts_start is not None else end - (self.latency_s or 0.0)
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
            _to_pico(self.cost_usd),
            self.cost_source,
            self.price_version,
            self.latency_s,
            self.ttft_s,
            int(self.stream),
            int(self.cache_hit),
            _to_pico(self.saved_usd),
        )


def _to_pico(value: Decimal | None) -> int | None:
    if value is None:
        return None
    return int((Decimal(value) * PICO).to_integral_value())


def _from_pico(value: int | None) -> Decimal:
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
    _fold_into_rollup(db)


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


#: the writer of every FOLD_EVERY-th row folds the rows past the watermark into the rollup
FOLD_EVERY = 2048
_UPTO = "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'rollup_upto')"
_DAY_OF_TS = "strftime('%Y-%m-%d', ts / 1000000, 'unixepoch')"


def _fold_into_rollup(db: sqlite3.Connection) -> None:
    """Add the rows past the watermark to the rollup and move the watermark (the caller
    holds the write transaction)."""
    upd = ", ".join(f"{m} = {m} + excluded.{m}" for m in MEASURES)
    db.execute(
        f"""INSERT INTO rollup SELECT {_DAY_OF_TS}, provider, model, feature, status, count(*),
            sum(cost_pico IS NULL), {", ".join(f"sum({m})" for m in MEASURES)},
            sum(search_credits), ifnull(sum(cost_pico), 0), ifnull(sum(saved_pico), 0)
            FROM attempts WHERE rowid > {_UPTO} GROUP BY 1, 2, 3, 4, 5
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


# ------------------------------------------------------------------ where the file lives
def _fs_type(path: Path, mounts: str | None = None) -> str:
    """The filesystem type of the mount holding ``path`` (from /proc/mounts; '' if unknown)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
    target = str(path.resolve())
    best, best_type = "", ""
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, parts[2]
    return best_type


_relocation_warned: set[str] = set()


def ledger_path(home: Path | None = None, *, mounts: str | None = None) -> Path:
    """The ledger file: in the home folder, or on local disk if the home is on a network FS."""
    from ._files import ensure_private_dir
    from .config import byok_home

    explicit = os.environ.get("JUPYTER_BYOK_LEDGER_DIR")
    if explicit:
        return ensure_private_dir(Path(explicit).expanduser()) / DB_NAME
    home = home or byok_home()
    fstype = _fs_type(home, mounts)
    if fstype.lower() not in NETWORK_FS:
        return home / DB_NAME
    local = Path("/var/tmp") / f"jupyter_byok-{os.getuid()}"
    if str(home) not in _relocation_warned:
        _relocation_warned.add(str(home))
        log.warning(
            "%s is on a network filesystem (%s), where SQLite can corrupt a shared ledger; "
            "keeping the usage ledger on local disk at %s (set JUPYTER_BYOK_LEDGER_DIR to choose)",
            home,
            fstype,
            local,
        )
    return ensure_private_dir(local) / DB_NAME


# ------------------------------------------------------------------------------- times
_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")


def parse_time(value: Any, *, now: datetime | None = None) -> int | None:
    """``datetime``, ``date``, ISO string, epoch seconds, ``today``, ``yesterday``, ``month``,
    or ``7d``/``12h``/``30m``/``2w`` -> integer microseconds since the epoch (UTC).

    A time out of the calendar's range (``99999999999d``, ``nan``) is a ConfigError."""
    try:
        us = _parse_time(value, now)
        if us is not None and not -(2**63) < us < 2**63:  # SQLite's integers
            raise OverflowError
        return us
    except (OverflowError, ValueError):
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:37]}..."
        raise ConfigError(
            f"the time {shown} is out of range: use an ISO date such as 2026-11-01, "
            "'today', 'month' or a span such as '7d'"
        ) from None


def _parse_time(value: Any, now: datetime | None) -> int | None:
    if value is None:
        return None
    now = now or datetime.now(timezone.utc)
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.astimezone()  # naive means local time
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return round(float(value) * 1e6)
    elif isinstance(value, str):
        text = value.strip().lower()
        midnight = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        m = _RELATIVE.match(text)
        if text == "today":
            dt = midnight
        elif text == "yesterday":
            dt = midnight - timedelta(days=1)
        elif text == "month":
            dt = midnight.replace(day=1)
        elif m:
            n, unit = int(m.group(1)), m.group(2)
            span = {"m": timedelta(minutes=n), "h": timedelta(hours=n), "d": timedelta(days=n)}
            dt = now - span.get(unit, timedelta(weeks=n))
        else:
            try:
                dt = datetime.fromisoformat(value.strip())
            except ValueError:
                shown = repr(value) if len(value) <= 40 else f"{value[:37]!r}..."
                raise ConfigError(
                    f"cannot read the time {shown}: use an ISO date such as 2026-11-01, "
                    "'today', 'month' or a span such as '7d'"
                ) from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
    else:
        raise ConfigError(f"cannot use {value!r} as a time: give a datetime, a date or '7d'")
    return round(dt.timestamp() * 1e6)


_DAY_US = 86_400 * 1_000_000


def _day(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, timezone.utc).strftime("%Y-%m-%d")


# ------------------------------------------------------------------------------ ledger
def _where(
    since: int | None, until: int | None, filters: dict[str, Any], allowed: Iterable[str]
) -> tuple[str, list[Any]]:
    allowed = set(allowed)
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    if until is not None:
        clauses.append("ts < ?")
        params.append(until)
    for name, value in filters.items():
        if value is None:
            continue
        if name not in allowed:
            raise ConfigError(
                f"cannot filter usage by {name!r}: use one of {', '.join(sorted(allowed))}"
            )
        if isinstance(value, list | tuple | set | frozenset):
            values = [str(v) for v in value]
            clauses.append(f"{name} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
        else:
            clauses.append(f"{name} = ?")
            params.append(str(value))
    return (" AND ".join(clauses) or "1"), params


_BUCKETS = {
    None: None,
    "day": "day",
    "week": "date(day, 'weekday 0', '-6 days')",
    "month": "substr(day, 1, 7) || '-01'",
}


#: how long a writability check is trusted before the next one (see Ledger.ensure_writable)
CHECK_EVERY_S = 0.25
#: calls are refused when the ledger's file system has less than this free
MIN_FREE_BYTES = 256 * 1024


def _size(n: int) -> str:
    if n < 0:
        return "unknown space"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _reason(exc: BaseException) -> str:
    """The cause of a ledger failure in a few words (the OS's or SQLite's)."""
    cause = exc.__cause__ if isinstance(exc, LedgerError) and exc.__cause__ else exc
    return " ".join(str(cause).split()) or type(cause).__name__


def _is_write_failure(exc: LedgerError) -> bool:
    """A failure of the disk or the file (not a malformed row, which is a bug to raise)."""
    return isinstance(exc.__cause__, sqlite3.Error | OSError)


_with_pending: weakref.WeakSet[Ledger] = weakref.WeakSet()


def _track_pending(ledger: Ledger) -> None:
    _with_pending.add(ledger)


@atexit.register
def _last_retry() -> None:
    """At exit, one last try for rows kept pending; what still fails is logged, row by row."""
    for led in list(_with_pending):
        if led._pending and led._retry_pending() is not None:
            for r in led._pending:
                log.error(
                    "usage row lost at exit (the ledger %s could not be written): %s %s:%s "
                    "status=%s tokens=%d+%d cost_usd=%s ts_end=%s",
                    led.path,
                    r.id,
                    r.provider,
                    r.model,
                    r.status,
                    r.input_tokens,
                    r.output_tokens,
                    r.cost_usd,
                    r.ts_end,
                )


class Ledger:
    """The usage ledger. Safe to share between threads; re-opens itself after ``fork()``."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 10.0,
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigError("synchronous must be FULL, NORMAL or EXTRA (OFF can lose rows)")
        self._path = None if path is None else Path(path)
        self._sync = synchronous.upper()
        self._busy_ms = int(busy_timeout_s * 1000)
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._lock = threading.RLock()
        #: (st_dev, st_ino) of the file the connection has open (see :meth:`check_writable`)
        self._identity: tuple[int, int] | None = None
        # Health (see "Failures" in :meth:`check_writable`): rows whose write failed, kept
        # in memory for the next retry; why calls are refused now (``None``: they are not);
        # when that was last decided (time.monotonic()).
        self._health_lock = threading.Lock()
        self._pending: list[LedgerRow] = []
        self._refusal: str | None = None
        self._checked_at = -float("inf")
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._failed_writes = 0
        self._space: tuple[int, int] = (-1, -1)

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = ledger_path()
        return self._path

    # --------------------------------------------------------------- connection
    def _connect(self) -> sqlite3.Connection:
        # A connection must never cross fork(): the child opens its own and abandons
        # (does not close) the inherited one, whose locks belong to the parent.
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not path.exists()
            conn = sqlite3.connect(
                str(path), timeout=self._busy_ms / 1000, isolation_level=None,
                check_same_thread=False,
            )  # fmt: skip
            if fresh:
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o600)
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._sync}")
            migrate(conn)
            st = os.stat(path)
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(
                f"cannot open the usage ledger {path} ({exc}); check the disk and permissions, "
                "or move the file aside to start a new one"
            ) from exc
        self._conn, self._pid = conn, os.getpid()
        self._identity = (st.st_dev, st.st_ino)
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        # Read your writes: rows this process handed to the background writer come first.
        from ._group_commit import flush_all

        flush_all()
        with self._lock:
            conn = self._connect()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot read the usage ledger {self.path} ({exc})") from exc

    # ------------------------------------------------------------------ writing
    def record(self, row: LedgerRow) -> str:
        """Append one attempt; returns its id once it is committed."""
        return self.record_many([row])[0]

    def record_many(self, rows: Iterable[LedgerRow]) -> list[str]:
        """Append attempts in one transaction (all or none); returns their ids."""
        rows = list(rows)
        values = [r.values() for r in rows]
        with self._lock:
            conn = self._connect()
            try:
                if len(values) == 1:  # one statement is its own transaction (autocommit)
                    last = conn.execute(_INSERT, values[0]).lastrowid or 0
                    if last % FOLD_EVERY == 0 and last:
                        self._fold(conn)
                    return [rows[0].id]
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(_INSERT, values)
                    (last,) = conn.execute("SELECT last_insert_rowid()").fetchone()
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
                if last // FOLD_EVERY != (last - len(values)) // FOLD_EVERY:
                    self._fold(conn)
            except sqlite3.Error as exc:
                raise LedgerError(
                    f"could not write to the usage ledger {self.path} ({exc}); the call itself "
                    "went through; check free disk space and file permissions"
                ) from exc
        return [r.id for r in rows]

    # ------------------------------------------------------------------- health
    # Failures. A call is sent only while the ledger is known to take rows: the engine asks
    # :meth:`ensure_writable` first, which answers from remembered state and re-checks at
    # most every CHECK_EVERY_S (a statvfs and a stat; a real write only to retry rows kept
    # pending). A write that fails after the provider answered loses nothing: its rows are
    # kept here (:meth:`keep_pending`), logged, and retried by the next check; until they
    # are written, calls are refused unsent.
    def record_or_keep(self, rows: list[LedgerRow]) -> str | None:
        """Append ``rows``; if the write fails, keep them pending and return the warning
        for the caller (``None`` once they are committed)."""
        try:
            self.record_many(rows)
        except LedgerError as exc:
            if not _is_write_failure(exc):
                raise
            return self.keep_pending(rows, exc)
        return None

    def keep_pending(self, rows: list[LedgerRow], exc: BaseException) -> str:
        """Keep rows whose write failed, in memory, for the next retry; log the failure and
        refuse calls until they are written. Returns the one-line warning for the caller."""
        reason = _reason(exc)
        with self._health_lock:
            self._pending.extend(rows)
            pending = len(self._pending)
            self._failed_writes += 1
            self._last_error, self._last_error_at = reason, time.time()
            free = self._measure_space(fresh=True)[0]
            self._refusal = (
                f"the usage ledger {self.path} could not be written ({reason}); "
                f"{pending} row(s) are pending in memory; {_size(free)} free"
            )
            self._checked_at = time.monotonic()
        _track_pending(self)
        log.error(
            "could not write %d usage row(s) to %s (%s); %d row(s) pending in memory, retried "
            "before the next call (calls are refused until they are written)",
            len(rows),
            self.path,
            reason,
            pending,
        )
        return (
            f"ledger: this call was NOT recorded: the usage ledger {self.path} could not be "
            f"written ({reason}); its row is kept in memory ({pending} pending) and retried, "
            f"and new calls are refused until it is written ({_size(free)} free)"
        )

    def health_is_fresh(self) -> bool:
        """Whether :meth:`raise_if_refused` alone may answer (no re-check is due)."""
        return time.monotonic() - self._checked_at < CHECK_EVERY_S

    def raise_if_refused(self, what: str = "the call") -> None:
        refusal = self._refusal
        if refusal is not None:
            raise LedgerUnavailableError(
                f"not sending {what}: {refusal}; free some space or repair the file or folder "
                "(or set JUPYTER_BYOK_LEDGER_DIR), then retry"
            )

    def ensure_writable(self, what: str = "the call") -> None:
        """Raise :class:`LedgerUnavailableError` (one line: why, where, space free) if the
        ledger is known not to take rows; re-checks at most every CHECK_EVERY_S."""
        if not self.health_is_fresh():
            self.check_writable()
        self.raise_if_refused(what)

    def check_writable(self, *, probe_write: bool = False) -> str | None:
        """Check now whether the ledger takes rows; returns why not (``None``: it does).

        Opens the file if needed (a file that is not a database, or a directory where the
        file should be, is found here), reopens it if the path no longer names the file
        that is open (replaced or deleted), checks the file system (read-only, less than
        MIN_FREE_BYTES free) and write permission, and writes the rows kept pending.
        ``probe_write`` also commits one small write (``meta.health_probe``).
        """
        path = self.path
        reason: str | None = None
        free, total, read_only = self._measure_space(fresh=True)
        if read_only:
            reason = "its file system is read-only"
        elif 0 <= free < MIN_FREE_BYTES:
            reason = "its disk is full"
        try:
            # the usual case (the file open here is still the one at ``path``) takes no lock:
            # the writer thread may hold it for a whole commit
            if reason is None and (probe_write or not self._still_open(path)):
                with self._lock:
                    if not self._still_open(path):
                        self.close()
                    conn = self._connect()
                    if probe_write:
                        conn.execute(
                            "INSERT OR REPLACE INTO meta VALUES ('health_probe', ?)",
                            (str(time.time()),),
                        )
        except LedgerError as exc:
            reason = f"it cannot be opened ({_reason(exc)})"
        except sqlite3.Error as exc:
            reason = f"a test write failed ({exc})"
        if reason is None and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
            reason = "this user may not write it"
        if reason is None:
            reason = self._retry_pending()
        with self._health_lock:
            if reason is None:
                self._refusal = None
            else:
                reason = f"{reason}; {_size(free)} free of {_size(total)}"
                if self._refusal is None:
                    log.warning("the usage ledger %s cannot take rows: %s", path, reason)
                self._refusal = f"the usage ledger {path} cannot take rows: {reason}"
            self._checked_at = time.monotonic()
        return reason

    def _still_open(self, path: Path) -> bool:
        """Whether this process has the ledger open and ``path`` still names that file (a
        file replaced or removed under an open connection would take rows to a lost file)."""
        if self._conn is None or self._pid != os.getpid():
            return False
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != self._identity:
            log.warning("the usage ledger %s was replaced or removed; reopening it", path)
            return False
        return True

    def check_is_cheap(self) -> bool:
        """Whether :meth:`check_writable` costs only a few system calls now (the file is
        open, no rows are pending): then it may run on an event loop."""
        return self._conn is not None and self._pid == os.getpid() and not self._pending

    def _measure_space(self, fresh: bool = False) -> tuple[int, int, bool]:
        """(bytes free, bytes in all, read-only) of the ledger's file system; -1 unknown."""
        if not fresh:
            return (*self._space, False)
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            self._space = (-1, -1)
            return -1, -1, False
        # root may use the blocks reserved for it (SQLite running as root does)
        blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
        self._space = (blocks * st.f_frsize, st.f_blocks * st.f_frsize)
        return (*self._space, bool(st.f_flag & os.ST_RDONLY))

    def _retry_pending(self) -> str | None:
        with self._health_lock:
            rows, self._pending = self._pending, []
        if not rows:
            return None
        try:
            self.record_many(rows)  # INSERT OR IGNORE: rows written before are not doubled
        except LedgerError as exc:
            with self._health_lock:
                self._pending[:0] = rows
                self._failed_writes += 1
                self._last_error, self._last_error_at = _reason(exc), time.time()
            log.error(
                "could not write %d pending usage row(s) to %s (%s); still pending",
                len(rows),
                self.path,
                _reason(exc),
            )
            return f"{len(rows)} row(s) kept in memory still cannot be written ({_reason(exc)})"
        log.warning("wrote %d usage row(s) kept pending to %s", len(rows), self.path)
        return None

    def health(self) -> dict[str, Any]:
        """What the ledger's health is as last checked (JSON-ready; see :func:`ledger_health`)."""
        with self._health_lock:
            pending = list(self._pending)
            free, total = self._space
            data: dict[str, Any] = {
                "path": str(self.path),
                "writable": self._refusal is None,
                "error": self._refusal,
                "pending": len(pending),
                "pending_cost_usd": str(
                    sum((r.cost_usd or Decimal(0) for r in pending), Decimal(0))
                ),
                "failed_writes": self._failed_writes,
                "last_error": self._last_error,
                "last_error_at": None
                if self._last_error_at is None
                else datetime.fromtimestamp(self._last_error_at, timezone.utc).isoformat(),
                "free_bytes": None if free < 0 else free,
                "total_bytes": None if total < 0 else total,
            }
        return data

    def fold(self) -> None:
        """Fold every row past the rollup's watermark into it now (appends do it every
        FOLD_EVERY rows; queries add the rows past it, so this is never needed for
        correctness)."""
        with self._lock:
            self._fold(self._connect())

    def _fold(self, conn: sqlite3.Connection) -> None:
        # after the row's own commit: a failed fold loses nothing (its rows stay past the
        # watermark, where queries still count them, and the next fold takes them)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                _fold_into_rollup(conn)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            log.debug("ledger rollup not folded this time (%s)", exc)

    # ------------------------------------------------------------------ reading
    def _union(
        self, since: int | None, until: int | None, filters: dict[str, Any]
    ) -> tuple[str, list[Any]] | None:
        """Day-level rows from the rollup for whole days, plus raw rows for the rows past its
        watermark and for partial days at the edges.

        ``None`` when a filter needs a column the rollup does not keep.
        """
        if any(v is not None and k not in ROLLUP_DIMS for k, v in filters.items()):
            return None
        d0 = None if since is None else -(-since // _DAY_US) * _DAY_US  # first whole day
        d1 = None if until is None else (until // _DAY_US) * _DAY_US  # end of last whole day
        if d0 is not None and d1 is not None and d1 <= d0:
            return None
        fw, fparams = _where(None, None, filters, ROLLUP_DIMS)
        rclauses, rparams = [fw], list(fparams)
        if d0 is not None:
            rclauses.append("day >= ?")
            rparams.append(_day(d0))
        if d1 is not None:
            rclauses.append("day < ?")
            rparams.append(_day(d1))
        cols = f"provider, model, feature, status, n, unknown_n, {', '.join(MEASURES)}"
        money = "search_credits, cost_pico, saved_pico"
        sql = f"SELECT day, {cols}, {money} FROM rollup WHERE {' AND '.join(rclauses)}"
        params: list[Any] = rparams
        edges = []
        if since is not None and d0 is not None and since < d0:
            edges.append((since, d0))
        if d1 is not None and until is not None and d1 < until:
            edges.append((d1, until))
        raw = (
            f" UNION ALL SELECT {_DAY_OF_TS}, provider, model, feature, status, 1, "
            f"cost_pico IS NULL, {', '.join(MEASURES)}, search_credits, "
            "ifnull(cost_pico, 0), ifnull(saved_pico, 0) FROM attempts WHERE "
        )
        # whole days: the rows not folded into the rollup yet (at most about FOLD_EVERY)
        tw, tparams = _where(d0, d1, filters, ROLLUP_DIMS)
        sql += f"{raw}rowid > {_UPTO} AND {tw}"
        params += tparams
        for lo, hi in edges:  # partial days: every row
            ew, eparams = _where(lo, hi, filters, ROLLUP_DIMS)
            sql += raw + ew
            params += eparams
        return sql, params

    def spend(self, since: Any = None, until: Any = None, **filters: Any) -> Decimal:
        """Exact total cost (USD) of the matching attempts; unknown costs count as 0."""
        lo, hi = parse_time(since), parse_time(until)
        union = self._union(lo, hi, filters)
        with self._read() as conn:
            if union is not None:
                sql, params = union
                (total,) = conn.execute(f"SELECT sum(cost_pico) FROM ({sql})", params).fetchone()
            else:
                where, params = _where(lo, hi, filters, DIMENSIONS)
                (total,) = conn.execute(
                    f"SELECT sum(cost_pico) FROM attempts WHERE {where}", params
                ).fetchone()
        return _from_pico(total)

    def summary(
        self,
        by: list[str],
        since: Any = None,
        until: Any = None,
        bucket: str | None = None,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """Grouped sums (SQL ``GROUP BY``) for REST and charts: one dict per group.

        ``bucket`` is ``None``, ``hour``, ``day``, ``week`` or ``month`` (UTC); ``cost_usd``
        is a float for charts and ``cost_usd_exact`` the exact decimal string.
        """
        by = list(by)
        bad = [b for b in by if b not in DIMENSIONS]
        if bad or (bucket not in _BUCKETS and bucket != "hour"):
            raise ConfigError(
                f"cannot group usage by {bad[0] if bad else bucket!r}: group by "
                f"{', '.join(DIMENSIONS)} and bucket by hour, day, week or month"
            )
        lo, hi = parse_time(since), parse_time(until)
        union = (
            None if bucket == "hour" or set(by) - set(ROLLUP_DIMS) else self._union(lo, hi, filters)
        )
        if union is not None:
            source, params = union
            bexpr = _BUCKETS[bucket]
            n_expr, unknown_expr = "sum(n)", "sum(unknown_n)"
        else:
            where, params = _where(lo, hi, filters, DIMENSIONS)
            source = f"SELECT * FROM attempts WHERE {where}"
            day = "strftime('%Y-%m-%d', ts / 1000000, 'unixepoch')"
            bexpr = {
                None: None,
                "hour": "strftime('%Y-%m-%dT%H:00:00Z', ts / 1000000, 'unixepoch')",
                "day": day,
                "week": f"date({day}, 'weekday 0', '-6 days')",
                "month": "strftime('%Y-%m-01', ts / 1000000, 'unixepoch')",
            }[bucket]
            n_expr, unknown_expr = "count(*)", "sum(cost_pico IS NULL)"
        keys = ([f"{bexpr} AS bucket"] if bexpr else []) + by
        names = (["bucket"] if bexpr else []) + by
        sums = ", ".join(f"sum({m})" for m in MEASURES)
        sql = (
            f"SELECT {', '.join([*keys, n_expr, unknown_expr])}, {sums}, sum(search_credits), "
            f"ifnull(sum(cost_pico), 0), ifnull(sum(saved_pico), 0) FROM ({source})"
        )
        if names:
            order = ", ".join(str(i + 1) for i in range(len(names)))
            sql += f" GROUP BY {order} ORDER BY {order}"
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
        out = []
        for r in rows:  # one per group, not per ledger row
            k = len(names)
            item: dict[str, Any] = dict(zip(names, r[:k], strict=True))
            item["calls"], item["unknown_cost_calls"] = r[k] or 0, r[k + 1] or 0
            for i, m in enumerate(MEASURES):
                item[m] = r[k + 2 + i] or 0
            item["search_credits"] = r[-3] or 0.0
            cost = _from_pico(r[-2])
            item["cost_usd"], item["cost_usd_exact"] = float(cost), str(cost)
            item["saved_usd"] = float(_from_pico(r[-1]))
            out.append(item)
        if not names and out and out[0]["calls"] == 0:
            return []
        return out

    def recent(
        self, limit: int = 50, since: Any = None, until: Any = None, **filters: Any
    ) -> list[dict[str, Any]]:
        """The newest attempts as JSON-ready dicts (no prompts exist to leak)."""
        where, params = _where(parse_time(since), parse_time(until), filters, DIMENSIONS)
        with self._read() as conn:
            cur = conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM attempts WHERE {where} "
                "ORDER BY ts DESC, rowid DESC LIMIT ?",
                [*params, int(limit)],
            )
            rows = cur.fetchall()
        out = []
        for r in rows:
            item = dict(zip(COLUMNS, r, strict=True))
            for us in ("ts", "ts_end"):
                item[us] = datetime.fromtimestamp(item[us] / 1e6, timezone.utc).isoformat()
            cost = item.pop("cost_pico")
            item["cost_usd"] = None if cost is None else str(_from_pico(cost))
            saved = item.pop("saved_pico")
            item["saved_usd"] = None if saved is None else str(_from_pico(saved))
            item["stream"], item["cache_hit"] = bool(item["stream"]), bool(item["cache_hit"])
            out.append(item)
        return out

    def count(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT count(*) FROM attempts").fetchone()[0])

    def integrity_check(self) -> str:
        with self._read() as conn:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])

    def frame(self, since: Any = None, until: Any = None, **filters: Any) -> pandas.DataFrame:
        """The matching attempts as a DataFrame, oldest first (see :mod:`._ledger_frame`)."""
        from ._ledger_frame import read_frame

        lo, hi = parse_time(since), parse_time(until)
        _where(lo, hi, filters, DIMENSIONS)  # validates filter names before any work
        return read_frame(self, lo, hi, filters)


_default: Ledger | None = None
_default_lock = threading.Lock()


_paths: dict[Path, Path] = {}


def default_ledger() -> Ledger:
    """The process-wide ledger at the current ``JUPYTER_BYOK_HOME``."""
    global _default
    from .config import byok_home

    home = byok_home()
    path = _paths.get(home)
    if path is None:  # reading /proc/mounts on every call would cost more than the write
        path = _paths[home] = ledger_path(home)
    current = _default
    if current is not None and current._path is path:  # twice a call: no lock, no Path ==
        return current
    with _default_lock:
        if _default is None or _default.path != path:
            _default = Ledger(path)
        return _default


def ledger_health(ledger: Ledger | None = None, *, probe_write: bool = False) -> dict[str, Any]:
    """The health of the usage ledger, checked now (for ``jupyter byok doctor``).

    ``path``; ``writable`` and ``error`` (why calls are refused now, one line, or ``None``);
    ``pending`` rows (and their ``pending_cost_usd``) whose write failed and that are kept
    in memory *by this process*; ``failed_writes``; ``last_error`` and ``last_error_at``;
    ``free_bytes`` and ``total_bytes`` of its file system. ``probe_write`` also commits one
    small write. A server's own pending rows are in its ``GET /byok/status`` (``ledger``).
    """
    led = ledger if ledger is not None else default_ledger()
    led.check_writable(probe_write=probe_write)
    return led.health()


def usage(since: Any = None, until: Any = None, **filters: Any) -> pandas.DataFrame:
    """The usage ledger as a pandas DataFrame: one row per provider attempt.

    ``since``/``until`` take a datetime, a date, an ISO string, ``"today"``, ``"month"`` or a
    span such as ``"7d"``; ``filters`` match columns exactly (``provider="openai"``) or by
    list (``model=["gpt-4o", "o3"]``).
    """
    return default_ledger().frame(since=since, until=until, **filters)


def export(
    path: str | os.PathLike[str], since: Any = None, until: Any = None, **filters: Any
) -> Path:
    """Write the usage ledger to ``.csv`` or ``.parquet`` (chosen by the file extension)."""
    out = Path(path)
    frame = usage(since=since, until=until, **filters)
    suffix = out.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(out, index=False)
    elif suffix in (".parquet", ".pq"):
        try:
            frame.to_parquet(out, index=False)
        except ImportError as exc:
            raise ConfigError(f"Parquet export needs pyarrow: pip install pyarrow ({exc})")
    else:
        raise ConfigError(f"cannot export to {out.name}: use a .csv or .parquet file name")
    return out
