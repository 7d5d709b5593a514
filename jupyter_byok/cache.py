"""The content-addressed cache: re-running a cell or a pipeline does not pay twice.

One store, two namespaces: ``call`` (whole provider answers, ``cache=True``; entries expire
after ``ttl_s`` and the least recently used are evicted past ``max_bytes``) and ``node``
(a pipeline node's finished output, kept until cleared, so that an interrupted map resumes
where it stopped).

Invariants: a key is the SHA-256 of a canonical JSON of its namespace and of what decides
the answer (:func:`content_key`; ``1`` and ``1.0`` are the same number), so equal requests
and only equal requests share an entry; entries hold answers (model output and usage),
never keys, and only as plaintext the user already received. SQLite (WAL) in
``$JUPYTER_BYOK_HOME/cache.sqlite3``, 0600.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from ._sqlite import use_wal
from .errors import LedgerError

__all__ = ["IGNORED_PARAMS", "ContentCache", "ResponseCache", "cache_key", "content_key"]

#: request parameters that do not change what the model answers
IGNORED_PARAMS = frozenset(
    {
        "stream", "stream_options", "timeout", "user", "metadata", "cache", "request_id",
        "max_retries", "extra_headers", "store", "service_tier", "feature", "origin",
    }
)  # fmt: skip
DEFAULT_TTL_S = 7 * 86_400.0
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
PICO = 10**12


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value  # 1 and 1.0 ask the same thing
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        return _canonical(float(value))
    if hasattr(value, "to_dict"):
        return _canonical(value.to_dict())
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_canonical(v) for v in value]
    raise TypeError(f"cannot use a {type(value).__name__} in a cache key")


def content_key(namespace: str, content: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``namespace`` and ``content`` (see the module)."""
    body = {"ns": namespace, "v": 2, **_canonical(content)}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(
    provider: str, model: str, messages: Sequence[Any], params: Mapping[str, Any] | None
) -> str:
    """The ``call`` key: everything that decides a provider's answer."""
    relevant = {k: v for k, v in (params or {}).items() if k not in IGNORED_PARAMS}
    content = {"provider": provider, "model": model, "messages": list(messages)}
    return content_key("call", {**content, "params": relevant})


class ContentCache:
    """One namespace of the cache file; thread-safe, one connection per process."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        namespace: str = "call",
        ttl_s: float | None = DEFAULT_TTL_S,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``ttl_s``/``max_bytes``: ``None`` keeps entries until cleared; ``clock``: the
        wall clock in seconds (a seam: tests pass their own)."""
        self._path = None if path is None else Path(path)
        self.namespace = namespace
        self._clock = clock
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._lock = threading.RLock()
        self.misses = 0

    @property
    def path(self) -> Path:
        if self._path is None:
            from .config import byok_home

            self._path = byok_home() / "cache.sqlite3"
        return self._path

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        fresh = not self.path.exists()
        conn = sqlite3.connect(
            str(self.path), timeout=10, isolation_level=None, check_same_thread=False
        )
        if fresh:
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)
        conn.execute("PRAGMA busy_timeout = 10000")
        use_wal(conn, 10.0)
        conn.execute("PRAGMA synchronous = NORMAL")  # a lost cache entry costs one re-run
        conn.execute(
            """CREATE TABLE IF NOT EXISTS entries (
                key TEXT PRIMARY KEY, payload TEXT NOT NULL, cost_pico INTEGER,
                created REAL NOT NULL, last_used REAL NOT NULL, size INTEGER NOT NULL,
                hits INTEGER NOT NULL DEFAULT 0, ns TEXT NOT NULL DEFAULT 'call')"""
        )
        columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
        if "ns" not in columns:  # a cache file from before the node namespace
            conn.execute("ALTER TABLE entries ADD COLUMN ns TEXT NOT NULL DEFAULT 'call'")
        conn.execute("DROP INDEX IF EXISTS entries_lru")
        conn.execute("CREATE INDEX IF NOT EXISTS entries_ns_lru ON entries (ns, last_used)")
        self._conn, self._pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._connect()
            except sqlite3.Error as exc:
                raise LedgerError(
                    f"the cache {self.path} failed ({exc}); "
                    "run `jupyter byok cache clear` or delete the file"
                ) from exc

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored answer for ``key``, or ``None`` (missing or expired)."""
        now = self._clock()
        with self._db() as conn:
            row = conn.execute(
                "SELECT payload, created FROM entries WHERE key = ? AND ns = ?",
                (key, self.namespace),
            ).fetchone()
            if row is None or (self.ttl_s is not None and now - row[1] > self.ttl_s):
                self.misses += 1
                if row is not None:
                    conn.execute("DELETE FROM entries WHERE key = ?", (key,))
                return None
            conn.execute(
                "UPDATE entries SET last_used = ?, hits = hits + 1 WHERE key = ?", (now, key)
            )
        payload: dict[str, Any] = json.loads(row[0])
        return payload

    def put(self, key: str, payload: Mapping[str, Any], cost_usd: Decimal | None = None) -> None:
        """Store an answer and what it cost (the saving a later hit records)."""
        text = json.dumps(payload, separators=(",", ":"), default=str)
        cost = None if cost_usd is None else int((Decimal(cost_usd) * PICO).to_integral_value())
        now = self._clock()
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                    (key, text, cost, now, now, len(text.encode("utf-8")), self.namespace),
                )
                self._evict(conn, now)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _evict(self, conn: sqlite3.Connection, now: float) -> None:
        ns = self.namespace
        if self.ttl_s is not None:
            conn.execute("DELETE FROM entries WHERE ns = ? AND created < ?", (ns, now - self.ttl_s))
        if self.max_bytes is None:
            return
        (total,) = conn.execute(
            "SELECT ifnull(sum(size), 0) FROM entries WHERE ns = ?", (ns,)
        ).fetchone()
        if total <= self.max_bytes:
            return
        # drop least recently used entries until the rest fits
        conn.execute(
            """DELETE FROM entries WHERE key IN (
                SELECT key FROM (SELECT key, sum(size) OVER (ORDER BY last_used DESC, key)
                                 AS running FROM entries WHERE ns = ?) WHERE running > ?)""",
            (ns, self.max_bytes),
        )

    def saved_cost(self, key: str) -> Decimal | None:
        with self._db() as conn:
            row = conn.execute(
                "SELECT cost_pico FROM entries WHERE key = ? AND ns = ?", (key, self.namespace)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return Decimal(row[0]) / Decimal(PICO)

    def stats(self) -> dict[str, Any]:
        with self._db() as conn:
            n, size, hits, saved = conn.execute(
                "SELECT count(*), ifnull(sum(size), 0), ifnull(sum(hits), 0), "
                "ifnull(sum(hits * ifnull(cost_pico, 0)), 0) FROM entries WHERE ns = ?",
                (self.namespace,),
            ).fetchone()
        return {
            "path": str(self.path),
            "namespace": self.namespace,
            "entries": n,
            "bytes": size,
            "hits": hits,
            "misses_this_process": self.misses,
            "saved_usd": str(Decimal(saved) / Decimal(PICO)),
            "ttl_s": self.ttl_s,
            "max_bytes": self.max_bytes,
        }

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def clear(self) -> int:
        """Remove every entry of this namespace; returns how many there were."""
        with self._db() as conn:
            cur = conn.execute("DELETE FROM entries WHERE ns = ?", (self.namespace,))
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
        return int(cur.rowcount)


#: the ``call`` namespace under its historical name
ResponseCache = ContentCache
