"""The shared ledger: every server's rows in one PostgreSQL database, with a local spool.

:class:`SharedLedger` stands where the SQLite :class:`~.store.Ledger` stands (the engine,
the writer, the readers and ``doctor`` use either the same way) when
``JUPYTER_BYOK_LEDGER_URL`` is a ``postgresql://`` URL.

Invariants:

* a call's rows are committed in the local spool (an SQLite ledger of the same schema,
  ``spool.sqlite3`` beside the local ledger) before the call returns, exactly as the
  SQLite ledger commits them: no call waits for another machine, and calls keep working
  through an outage;
* a background sender copies them into PostgreSQL shortly after (``send_after_s``: the
  rows of calls that end close together share one transaction), and the spool is replayed
  once the database answers again after an outage (checked at most every
  ``check_every_s``, and at exit). Rows are copied in batches past a watermark kept in the
  spool, ``ON CONFLICT (id) DO NOTHING``, so a copy interrupted anywhere and run again adds
  nothing twice (:func:`copy_ledger`, also behind ``jupyter byok ledger migrate``); rows
  copied are then pruned from the spool;
* a call's rows settle its budget reservations (:mod:`.reserve`) in the transaction that
  copies them: until then its estimate counts against the budget, never less;
* a process reads its own writes: every read first sends what this process spooled;
* reads are scoped: ``me`` (this user's rows, the default), ``team`` or ``all``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import file_lock
from ..errors import ConfigError, LedgerError
from . import pgquery
from .pg import Database, Unreachable, redact_url
from .schema import COLUMNS, DIMENSIONS, LedgerRow
from .store import Ledger, ledger_path
from .who import who
from .writer import LedgerWriter, flush_all

if TYPE_CHECKING:
    import pandas
    import psycopg


__all__ = ["SCOPES", "SPOOL_NAME", "SharedLedger", "copy_ledger", "shared_ledger"]

log = logging.getLogger("jupyter_byok")

SPOOL_NAME = "spool.sqlite3"
SCOPES = ("me", "team", "all")
#: rows per transaction when copying a ledger (replay, migrate)
COPY_BATCH = 5_000


# --------------------------------------------------------------------------- copying
#: the spool's watermark: a spooled row is sent once, to the database configured then
SENT_MARK = "sent_upto"


def _mark_key(db_uuid: str) -> str:
    """A migrated ledger's watermark, one per database (a ledger may go to several)."""
    return f"copied_upto:{db_uuid}"


def db_uuid(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT value FROM meta WHERE key = 'ledger_uuid'").fetchone()
    return str(row[0]) if row else ""


def copied_upto(src: Ledger, key: str) -> int | None:
    """The watermark ``key`` of ``src``: its rows up to this rowid are copied."""
    with src.connection() as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else None


def pending_rows(src: Ledger, key: str = SENT_MARK) -> int:
    """Rows of ``src`` past its watermark ``key``."""
    upto = copied_upto(src, key) or 0
    with src.connection() as conn:
        (n,) = conn.execute("SELECT count(*) FROM attempts WHERE rowid > ?", (upto,)).fetchone()
    return int(n)


def copy_ledger(
    src: Ledger,
    db: Database,
    *,
    batch: int = COPY_BATCH,
    progress: Callable[[int, int], None] | None = None,
    spool: bool = False,
) -> int:
    """Copy the rows of the SQLite ledger ``src`` past its watermark into ``db``; returns
    the rows copied (rows already there are skipped: the count never changes twice).

    Each batch is one PostgreSQL transaction (``COPY`` into a temporary table, then
    ``INSERT ... ON CONFLICT (id) DO NOTHING``); the watermark moves after it commits, so an
    interruption anywhere costs at most one batch copied again, and skipped. Rows written
    before rows carried who made them (``m006_who_where``) are this user's: they get this
    process's user, team and server.

    ``spool``: ``src`` is a shared ledger's spool. Its one watermark (``SENT_MARK``) holds
    whatever the database, so a row is sent once, to the database configured when it is
    sent (a spool from before that mark starts from this database's own); and the rows
    copied are pruned as the watermark passes them, all but the newest: SQLite numbers a
    new row after the largest rowid left, which must stay past the watermark."""
    cols = ", ".join(COLUMNS)
    who_at = [COLUMNS.index(c) for c in ("user_name", "team", "server")]
    mine = who()
    with db.connection() as conn:
        uuid = db_uuid(conn)
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS byok_incoming "
            "(LIKE attempts INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        key = SENT_MARK if spool else _mark_key(uuid)
        upto = copied_upto(src, key)
        if upto is None and spool:
            upto = copied_upto(src, _mark_key(uuid))
        upto = upto or 0
        copied = 0
        while True:
            with src.connection() as sconn:
                rows = sconn.execute(
                    f"SELECT rowid, {cols} FROM attempts WHERE rowid > ? ORDER BY rowid LIMIT ?",
                    (upto, batch),
                ).fetchall()
            if not rows:
                break
            with conn.transaction():
                with conn.cursor().copy(f"COPY byok_incoming ({cols}) FROM STDIN") as copy:
                    for row in rows:
                        values = list(row[1:])
                        if values[who_at[0]] is None:
                            for at, value in zip(who_at, mine, strict=True):
                                values[at] = value if values[at] is None else values[at]
                        copy.write_row(values)
                cur = conn.execute(
                    f"INSERT INTO attempts ({cols}) SELECT {cols} FROM byok_incoming "
                    "ON CONFLICT (id) DO NOTHING"
                )
                copied += max(cur.rowcount, 0)
                conn.execute(
                    "DELETE FROM reservations r USING byok_incoming i "
                    "WHERE r.request_id = i.request_id"
                )
            upto = rows[-1][0]
            with src.connection() as sconn:
                sconn.execute("BEGIN IMMEDIATE")
                try:
                    sconn.execute(
                        "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                        "value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                        (key, str(upto)),
                    )
                    if spool:
                        sconn.execute("DELETE FROM attempts WHERE rowid < ?", (upto,))
                    sconn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(Exception):
                        sconn.execute("ROLLBACK")
                    raise
            if progress is not None:
                progress(upto, copied)
    return copied


# ----------------------------------------------------------------------- the ledger
class SharedLedger:
    """The usage ledger in PostgreSQL (see the module's notes). Safe to share between
    threads; the pool is made again after ``fork()``."""

    #: the engine reserves budgets across servers (:mod:`jupyter_byok.team_budgets`)
    shared = True
    #: while the database is unreachable, how often a call checks whether it is back
    check_every_s: float = 1.0
    #: how long the sender waits after a row is spooled before copying (rows of calls that
    #: end meanwhile go in the same transaction)
    send_after_s: float = 0.1

    def __init__(self, url: str, *, spool: Ledger | None = None, scope: str = "me") -> None:
        self.db = Database(url)
        self.url = url
        self._spool = spool
        self.scope = check_scope(scope)
        self._lock = threading.Lock()
        self._down: str | None = None
        self._checked = False
        self._checked_at = -float("inf")
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        #: rows spooled by this process and not yet known to be in the database
        self._unsent = 0
        self._writer: LedgerWriter | None = None
        # the background sender (see :meth:`_kick`) and what serializes copies here
        self._wake = threading.Event()
        self._sender: tuple[int, threading.Thread] | None = None
        self._send_lock = threading.Lock()
        self._closed = False
        self._budgets: tuple[float, list[Any]] | None = None
        self.frames = None
        _open.append(self)

    # ------------------------------------------------------------ where rows go
    @property
    def spool(self) -> Ledger:
        if self._spool is None:
            self._spool = Ledger(ledger_path().with_name(SPOOL_NAME))
        return self._spool

    @property
    def path(self) -> Path:
        """The local spool (where rows wait while the database is unreachable)."""
        return self.spool.path

    @property
    def writer(self) -> LedgerWriter:
        writer = self._writer
        if writer is None or writer.pid != os.getpid():
            with self._lock:
                writer = self._writer
                if writer is None or writer.pid != os.getpid():
                    writer = self._writer = LedgerWriter(self)
        return writer

    def close(self) -> None:
        """Send what this process spooled (best effort: what cannot be sent now stays in
        the spool for the next replay), stop the sender and close the pool and the spool."""
        with contextlib.suppress(Exception):
            self.flush()
        with self._send_lock:  # a copy under way ends first; none starts after
            self._closed = True
        self._wake.set()
        if self in _open:
            _open.remove(self)
        self.db.close()
        self.spool.close()

    # ------------------------------------------------------------------ writing
    def record(self, row: LedgerRow) -> str:
        return self.record_many([row])[0]

    def record_many(self, rows: Iterable[LedgerRow]) -> list[str]:
        """Append rows in one transaction, in PostgreSQL or else in the spool."""
        rows = list(rows)
        warning = self.record_or_keep(rows)
        if warning is not None:
            raise LedgerError(warning)
        return [r.id for r in rows]

    def record_or_keep(self, rows: list[LedgerRow]) -> str | None:
        """Commit ``rows`` in the local spool (its own failure policy applies: kept pending,
        calls refused), and have the sender copy them into PostgreSQL soon."""
        if not rows:
            return None
        for r in rows:  # a malformed row is a bug: raised here, before anything is written
            r.values()
        warning = self.spool.record_or_keep(rows)
        with self._lock:
            self._unsent += len(rows)
        self._kick()
        return warning

    # ------------------------------------------------------------------ sending
    def _kick(self) -> None:
        """Wake this process's sender (started on first use, and again after ``fork()``)."""
        if self._closed:  # a row written after close: left for the next replay
            return
        sender = self._sender
        if sender is None or sender[0] != os.getpid():
            with self._lock:
                sender = self._sender
                if sender is None or sender[0] != os.getpid():
                    self._wake = threading.Event()
                    thread = threading.Thread(
                        target=self._send_loop, name="byok-ledger-sender", daemon=True
                    )
                    self._sender = (os.getpid(), thread)
                    thread.start()
        self._wake.set()

    def _send_loop(self) -> None:
        wake = self._wake
        while not self._closed:
            wake.wait()
            time.sleep(self.send_after_s)
            wake.clear()
            if self._closed:
                return
            if self._down is None:
                self.replay(quiet=True)
            else:  # the check replays the spool once the database answers
                time.sleep(self.check_every_s)
                if self._down is not None and not self._database_is_fresh():
                    with contextlib.suppress(Exception):
                        self.check_writable()
            if self._down is not None and self._unsent:  # again, while rows of ours wait
                wake.set()

    def flush(self) -> None:
        """Copy what this process spooled into the database now (a no-op while it cannot
        be reached: the rows stay spooled)."""
        flush_all()
        if self._unsent and self._down is None:
            self.replay(quiet=True)

    def _mark_down(self, exc: BaseException) -> None:
        reason = " ".join(str(exc).split())
        with self._lock:
            was_up = self._down is None
            self._down = reason
            self._last_error, self._last_error_at = reason, time.time()
            self._checked_at = time.monotonic()
        if was_up:
            log.warning("%s; rows go to the local spool %s until it answers", reason, self.path)

    # ------------------------------------------------------------------- health
    def health_is_fresh(self) -> bool:
        return self._database_is_fresh() and self.spool.health_is_fresh()

    def raise_if_refused(self, what: str = "the call") -> None:
        self.spool.raise_if_refused(what)

    def ensure_writable(self, what: str = "the call") -> None:
        if not self._database_is_fresh():
            self.check_writable()
        self.spool.ensure_writable(what)

    def _database_is_fresh(self) -> bool:
        if self._down is None:
            return self._checked
        return time.monotonic() - self._checked_at < self.check_every_s

    def check_is_cheap(self) -> bool:
        return self._checked and self._down is None and self.spool.check_is_cheap()

    def check_writable(self, *, probe_write: bool = False) -> str | None:
        """Check now whether rows can be written (the spool takes them) and whether the
        database answers; returns why rows cannot be written (``None``: they can). While
        the database is known to answer, one ``SELECT 1`` on a pooled connection; otherwise
        a fresh connection (a refused one fails at once), and, if it answers, a new pool
        and a replay of the spool (also on the first check)."""
        refused = self.spool.check_writable(probe_write=probe_write)
        if self._checked and self._down is None:
            try:
                with self.db.connection() as conn:
                    conn.execute("SELECT 1")
                return refused
            except LedgerError as exc:
                self._mark_down(exc)
        try:
            self.db.connect().close()
        except LedgerError as exc:
            self._mark_down(exc)
            self._checked = True
            return refused
        with self._lock:
            was_down, self._down = self._down is not None, None
            self._checked, self._checked_at = True, time.monotonic()
        if was_down:
            log.warning("the shared ledger %s answers again", redact_url(self.url))
            self.db.reset()
        self.replay()
        return refused

    @property
    def unreachable(self) -> str | None:
        """Why the database is known not to answer now (``None``: it answers)."""
        return self._down

    def mark_unreachable(self, exc: BaseException) -> None:
        """Record that the database did not answer (rows go to the spool until it does)."""
        self._mark_down(exc)

    def replay(self, *, quiet: bool = False) -> int:
        """Copy the spool's rows not yet in the database, and prune them from the spool;
        returns the rows copied (0 when there is no spool, or the database does not answer:
        then it is marked unreachable). One copy at a time: across threads here, and across
        processes sharing the spool (a lock file beside it). ``quiet``: the sender's routine
        copies, logged at debug level (a replay after an outage is logged as a warning)."""
        if not self.spool.path.exists():
            return 0
        with self._send_lock:
            if self._closed:
                return 0
            unsent = self._unsent
            try:
                with file_lock(self.spool.path.with_name(SPOOL_NAME + ".lock")):
                    n = copy_ledger(self.spool, self.db, spool=True)
            except (LedgerError, OSError) as exc:
                self._mark_down(exc)
                return 0
            with self._lock:
                self._unsent -= unsent
        if n:
            log.log(
                logging.DEBUG if quiet else logging.WARNING,
                "replayed %d usage row(s) from the spool into the shared ledger",
                n,
            )
        return n

    def spooled(self) -> int:
        """Rows in the spool not yet sent to the database."""
        if not self.spool.path.exists():
            return 0
        return pending_rows(self.spool)

    def health(self) -> dict[str, Any]:
        """The spool's health (see :meth:`.store.Ledger.health`: ``writable``, and in
        ``error`` why calls are refused) with the database's: ``backend``, ``url`` (no
        password), ``reachable``, ``spooled`` rows not yet copied (of them
        ``spooled_by_this_process``) and the last error. This process's rows are sent
        first, as before any read."""
        self.flush()
        data = self.spool.health()
        return {
            **data,
            "backend": "postgresql",
            "url": redact_url(self.url),
            "reachable": self._down is None,
            "spooled": self.spooled(),
            "spooled_by_this_process": self._unsent,
            "last_error": self._last_error,
            "last_error_at": None
            if self._last_error_at is None
            else datetime.fromtimestamp(self._last_error_at, timezone.utc).isoformat(),
        }

    # ------------------------------------------------------------------ budgets
    def shared_budgets(self, max_age_s: float = 5.0) -> list[Any]:
        """The budgets across servers (re-read at most every ``max_age_s``). While the
        database is unreachable, the last list read is used: from memory, or, in a process
        that has not reached it yet, from ``shared-budgets.json`` beside the spool."""
        from . import reserve

        cached = self._budgets
        if cached is not None and (time.monotonic() - cached[0] < max_age_s or self._down):
            return list(cached[1])
        try:
            with self._reachable_connection() as conn:
                found = reserve.list_budgets(conn)
        except LedgerError as exc:
            self._mark_down(exc)
            if cached is None:
                cached = self._budgets = (time.monotonic(), self._last_budgets())
            return list(cached[1])
        if cached is None or cached[1] != found:
            self._keep_budgets(found)
        self._budgets = (time.monotonic(), found)
        return list(found)

    def _budgets_file(self) -> Path:
        return self.path.with_name("shared-budgets.json")

    def _keep_budgets(self, budgets: list[Any]) -> None:
        import json

        from .._files import atomic_write

        data = {"url": redact_url(self.url), "budgets": [b.to_json() for b in budgets]}
        try:
            atomic_write(self._budgets_file(), json.dumps(data).encode())
        except OSError as exc:
            log.debug("could not keep the budgets across servers (%s)", exc)

    def _last_budgets(self) -> list[Any]:
        import json

        from .reserve import SharedBudget

        try:
            data = json.loads(self._budgets_file().read_text(encoding="utf-8"))
            if data.get("url") != redact_url(self.url):
                return []
            return [
                SharedBudget(
                    b["name"],
                    b["period"],
                    b["scope"],
                    b["target"],
                    Decimal(b["limit_usd"]),
                    float(b["warn_at"]),
                    b["offline"],
                )
                for b in data["budgets"]
            ]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def budgets_fresh(self, max_age_s: float = 5.0) -> bool:
        """Whether :meth:`shared_budgets` answers from memory now (no database read)."""
        cached = self._budgets
        return cached is not None and (
            self._down is not None or time.monotonic() - cached[0] < max_age_s
        )

    def budgets_apply(self, provider: str, key_name: str | None) -> bool:
        """Whether a budget across servers (as last read) applies to this process's call."""
        cached = self._budgets
        if cached is None or not cached[1]:
            return cached is None
        user, team, _ = who()
        key = f"{provider}@{key_name or 'default'}"
        return any(b.applies(user, team, key) for b in cached[1])

    # ------------------------------------------------------------------ reading
    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for reading; rows this process queued are committed first. While
        the database is known to be unreachable, this fails at once (re-checked at most
        every ``check_every_s``) instead of waiting out the pool's timeout."""
        self.flush()
        with self._reachable_connection() as conn:
            yield conn

    @contextlib.contextmanager
    def _reachable_connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._down is not None and not self.health_is_fresh():
            self.check_writable()
        if self._down is not None:
            raise Unreachable(self._down)
        with self.db.connection() as conn:
            yield conn

    def _scoped(self, filters: dict[str, Any], scope: str | None) -> dict[str, Any]:
        scope = check_scope(scope or self.scope)
        user, team, _ = who()
        if scope == "me":
            return {**filters, "user_name": user}
        if scope == "team":
            if team is None:
                raise ConfigError(
                    "this server has no team: set JUPYTER_BYOK_TEAM (see the JupyterHub "
                    "section of the docs), or use scope='me'"
                )
            return {**filters, "team": team}
        return filters

    def spend(
        self, since: Any = None, until: Any = None, scope: str | None = None, **filters: Any
    ) -> Decimal:
        return pgquery.spend(self.connection, since, until, **self._scoped(filters, scope))

    def summary(
        self,
        by: list[str],
        since: Any = None,
        until: Any = None,
        bucket: str | None = None,
        scope: str | None = None,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        return pgquery.summary(
            self.connection, by, since, until, bucket, **self._scoped(filters, scope)
        )

    def recent(
        self,
        limit: int = 50,
        since: Any = None,
        until: Any = None,
        scope: str | None = None,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        return pgquery.recent(self.connection, limit, since, until, **self._scoped(filters, scope))

    def count(self, scope: str | None = "all") -> int:
        return pgquery.count(self.connection, **self._scoped({}, scope))

    def integrity_check(self) -> str:
        return "ok"

    def frame(
        self, since: Any = None, until: Any = None, scope: str | None = None, **filters: Any
    ) -> pandas.DataFrame:
        """The matching attempts as a DataFrame, oldest first (the Arrow ADBC driver)."""
        from . import query

        lo, hi = query.parse_time(since), query.parse_time(until)
        scoped = self._scoped(filters, scope)
        query.where(lo, hi, scoped, DIMENSIONS)
        self.flush()
        from .pgframe import read_frame

        return read_frame(self.url, lo, hi, scoped)


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ConfigError(f"usage scope {scope!r} is not one of {', '.join(SCOPES)}")
    return scope


def doctor_report() -> dict[str, Any]:
    """For ``jupyter byok doctor``: the shared ledger checked now, as labelled rows
    (``{}``: no shared ledger is configured)."""
    url = os.environ.get("JUPYTER_BYOK_LEDGER_URL")
    if not url:
        return {}
    led = shared_ledger(url)
    led.check_writable()
    h = led.health()
    spooled = h["spooled"]
    rows = [
        ("backend", f"postgresql at {h['url']}"),
        ("reachable", "yes" if h["reachable"] else f"NO: {h['last_error']}"),
        ("spooled rows", f"{spooled:,}"),
        ("spool", h["path"]),
        ("last error", h["last_error"] or "none"),
    ]
    return {"health": h, "rows": rows}


#: shared ledgers not closed yet (the replay at exit; few: one a process, plus commands')
_open: list[SharedLedger] = []
_shared: dict[str, SharedLedger] = {}
_shared_lock = threading.Lock()


def shared_ledger(url: str) -> SharedLedger:
    """The process-wide shared ledger for ``url`` (its spool beside the local ledger)."""
    found = _shared.get(url)
    if found is not None:
        return found
    with _shared_lock:
        found = _shared.get(url)
        if found is None:
            found = _shared[url] = SharedLedger(url)
        return found


@atexit.register
def _replay_at_exit() -> None:
    """One last copy of the rows this process spooled (best effort: the next process to
    reach the database replays whatever is left)."""
    for led in list(_open):
        if led._unsent and led.db._pid == os.getpid():
            with contextlib.suppress(Exception):
                flush_all()
                if led._down is None:
                    led.replay(quiet=True)
                else:
                    led.check_writable()
