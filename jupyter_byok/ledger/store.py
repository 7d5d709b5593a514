"""The usage ledger's store: one SQLite file (WAL) shared by every process, where it lives,
whether it takes rows, and what happens when it does not.

A write returns only after ``COMMIT``. Durability: WAL with ``synchronous=NORMAL`` by
default, so a committed row survives any crash of a process (the WAL is synced at
checkpoints, not on every commit; only a power failure or kernel panic can lose the last
few commits, never corrupt the file). ``synchronous="FULL"`` syncs on every commit for those
who want that too; the ledger's writer (:mod:`.writer`) already amortises each sync over
many rows. Every ``FOLD_EVERY``-th row's writer folds the rollup (:mod:`.schema`).

The failure policy (docs/security.md, "The usage ledger when writing fails"): a call is sent
only while the ledger is known to take rows (:meth:`Ledger.ensure_writable`, re-checked at
most every ``Ledger.check_every_s``); a write that fails after the provider answered keeps
its rows pending in memory (:meth:`Ledger.keep_pending`), logged and retried, and calls are
refused until they are written. Writing never imports pandas; reading into pandas is
:mod:`.frame`, the SQL sums are :mod:`.query`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._sqlite import use_wal
from ..config import byok_home
from ..errors import ConfigError, LedgerError, LedgerUnavailableError
from . import query
from .schema import DIMENSIONS, FOLD_EVERY, INSERT, LedgerRow, fold_into_rollup, migrate
from .writer import LedgerWriter, flush_all

if TYPE_CHECKING:
    import pandas

    from .frame import FrameReader

__all__ = [
    "CHECK_EVERY_S",
    "DB_NAME",
    "MIN_FREE_BYTES",
    "NETWORK_FS",
    "Ledger",
    "default_ledger",
    "fs_type",
    "ledger_health",
    "ledger_path",
]

log = logging.getLogger("jupyter_byok")

DB_NAME = "ledger.sqlite3"
#: filesystems on which SQLite's WAL locking is unsafe (sqlite.org/wal.html)
NETWORK_FS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "lustre", "gpfs", "ceph",
        "glusterfs", "fuse.glusterfs", "fuse.sshfs", "sshfs", "9p", "afs", "beegfs",
        "fuse.s3fs", "fuse.gcsfuse", "ncpfs", "coda", "ocfs2", "gfs2", "panfs", "wekafs",
    }
)  # fmt: skip


# ------------------------------------------------------------------ where the file lives
def fs_type(path: Path, mounts: str | None = None) -> str:
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
    from .._files import ensure_private_dir

    explicit = os.environ.get("JUPYTER_BYOK_LEDGER_DIR")
    if explicit:
        return ensure_private_dir(Path(explicit).expanduser()) / DB_NAME
    home = home or byok_home()
    fstype = fs_type(home, mounts)
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


#: how long a writability check is trusted by default (see Ledger.check_every_s)
CHECK_EVERY_S = 0.25
#: calls are refused when the ledger's file system has less than this free
MIN_FREE_BYTES = 256 * 1024


def _size(n: int) -> str:
    from .._format import human_size

    return "unknown space" if n < 0 else human_size(n)


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

    #: budgets across servers need a shared ledger (:class:`~.shared.SharedLedger`)
    shared = False

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 10.0,
        frames: FrameReader | None = None,
    ) -> None:
        """``frames`` reads the ledger into pandas for :meth:`frame` (its thresholds and
        which paths it may take; by default a :class:`~.frame.FrameReader` made on the
        first read)."""
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
        self._writer: LedgerWriter | None = None
        self.frames = frames

    #: how long a writability check is trusted before the next one (see
    #: :meth:`ensure_writable`); a class attribute, so that a test may check on every call
    check_every_s: float = CHECK_EVERY_S

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = ledger_path()
        return self._path

    @property
    def busy_timeout_ms(self) -> int:
        """How long a statement waits for another process's lock, in milliseconds (a new
        value applies when the ledger is next opened)."""
        return self._busy_ms

    @busy_timeout_ms.setter
    def busy_timeout_ms(self, ms: int) -> None:
        self._busy_ms = int(ms)

    @property
    def writer(self) -> LedgerWriter:
        """This ledger's writer in this process (see :mod:`.writer`): made on first use,
        and again after a ``fork()``."""
        writer = self._writer
        if writer is None or writer.pid != os.getpid():
            with self._health_lock:
                writer = self._writer
                if writer is None or writer.pid != os.getpid():
                    writer = self._writer = LedgerWriter(self)
        return writer

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
            use_wal(conn, self._busy_ms / 1000)
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

    def flush(self) -> None:
        """Wait until the rows this process handed to a writer thread are committed (a
        reader does this first; :class:`~.shared.SharedLedger` also sends its rows)."""
        flush_all()

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """The open connection, for reading, while this ledger's lock is held. Read your
        writes: rows this process handed to a writer thread are committed first."""
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
                    last = conn.execute(INSERT, values[0]).lastrowid or 0
                    if last % FOLD_EVERY == 0 and last:
                        self._fold(conn)
                    return [rows[0].id]
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(INSERT, values)
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
    # most every ``check_every_s`` (a statvfs and a stat; a real write only to retry rows kept
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
        return time.monotonic() - self._checked_at < self.check_every_s

    def raise_if_refused(self, what: str = "the call") -> None:
        refusal = self._refusal
        if refusal is not None:
            raise LedgerUnavailableError(
                f"not sending {what}: {refusal}; free some space or repair the file or folder "
                "(or set JUPYTER_BYOK_LEDGER_DIR), then retry"
            )

    def ensure_writable(self, what: str = "the call") -> None:
        """Raise :class:`LedgerUnavailableError` (one line: why, where, space free) if the
        ledger is known not to take rows; re-checks at most every ``check_every_s``."""
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
                "backend": "sqlite",
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
                fold_into_rollup(conn)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            log.debug("ledger rollup not folded this time (%s)", exc)

    # ------------------------------------------------------------------ reading
    def spend(self, since: Any = None, until: Any = None, **filters: Any) -> Decimal:
        """Exact total cost (USD) of the matching attempts; unknown costs count as 0."""
        return query.spend(self.connection, since, until, **filters)

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
        return query.summary(self.connection, by, since, until, bucket, **filters)

    def recent(
        self, limit: int = 50, since: Any = None, until: Any = None, **filters: Any
    ) -> list[dict[str, Any]]:
        """The newest attempts as JSON-ready dicts (no prompts exist to leak)."""
        return query.recent(self.connection, limit, since, until, **filters)

    def count(self) -> int:
        with self.connection() as conn:
            return int(conn.execute("SELECT count(*) FROM attempts").fetchone()[0])

    def integrity_check(self) -> str:
        with self.connection() as conn:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])

    def frame(self, since: Any = None, until: Any = None, **filters: Any) -> pandas.DataFrame:
        """The matching attempts as a DataFrame, oldest first (see :mod:`.frame`)."""
        lo, hi = query.parse_time(since), query.parse_time(until)
        query.where(lo, hi, filters, DIMENSIONS)  # validates filter names before any work
        frames = self.frames
        if frames is None:
            from .frame import FrameReader

            frames = self.frames = FrameReader()
        return frames.read(self, lo, hi, filters)


_default: Ledger | None = None
_default_lock = threading.Lock()


_paths: dict[Path, Path] = {}
#: the last home asked for and its ledger's path
_last_path: tuple[Path, Path] | None = None


def default_ledger() -> Ledger:
    """The process-wide ledger at the current ``JUPYTER_BYOK_HOME``, or the shared one
    (PostgreSQL, :mod:`.shared`) when ``JUPYTER_BYOK_LEDGER_URL`` is set."""
    global _default, _last_path
    url = os.environ.get("JUPYTER_BYOK_LEDGER_URL")
    if url:
        from .shared import shared_ledger

        return shared_ledger(url)  # type: ignore[return-value]  # the same interface

    home = byok_home()
    last = _last_path
    if last is not None and last[0] is home:  # the same home object: no Path hash nor ==
        path = last[1]
    else:
        found = _paths.get(home)
        if found is None:  # reading /proc/mounts on every call would cost more than the write
            found = _paths[home] = ledger_path(home)
        path = found
        _last_path = (home, path)
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
