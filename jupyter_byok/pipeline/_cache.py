"""The pipeline node cache: finished node outputs keyed by what produced them.

A key is the SHA-256 of a node's *resolved* configuration: kind, provider and model (after
aliases, without the key name), the exact messages or query sent, and the parameters. The
pipeline and node names are not part of it, so renaming a node keeps its cache and a map
interrupted halfway resumes where it stopped. Entries hold outputs, usage and the original
cost, never a key. One SQLite file (WAL) under ``JUPYTER_BYOK_HOME``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ByokError

__all__ = ["NodeCache", "node_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    key TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def node_key(config: dict[str, Any]) -> str:
    blob = json.dumps(
        config, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def llm_key(provider: str, model: str, messages: list[Any], params: dict[str, Any]) -> str:
    """The cache key of an LLM node: what decides its answer (run and estimate share it)."""
    return node_key(
        {
            "v": 1,
            "kind": "llm",
            "provider": provider,
            "model": model,
            "messages": [m.to_dict() for m in messages],
            "params": params,
        }
    )


def search_key(query: str, depth: str, params: dict[str, Any]) -> str:
    """The cache key of a search node."""
    return node_key({"v": 1, "kind": "search", "query": query, "depth": depth, "params": params})


class NodeCache:
    """Thread-safe; one connection, opened on first use."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        if self._path is None:
            from ..config import byok_home

            self._path = byok_home() / "pipeline-cache.sqlite"
        return self._path

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_SCHEMA)
                conn.commit()
            except sqlite3.Error as exc:
                raise ByokError(
                    f"the pipeline cache at {self.path} could not be opened ({exc}); "
                    "delete the file to start a fresh cache"
                ) from exc
            self._conn = conn
        return self._conn

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            try:
                row = (
                    self._connect()
                    .execute("SELECT payload FROM nodes WHERE key = ?", (key,))
                    .fetchone()
                )
            except sqlite3.Error as exc:
                raise ByokError(f"the pipeline cache could not be read ({exc})") from exc
        if row is None:
            return None
        try:
            data: dict[str, Any] = json.loads(row[0])
        except ValueError:
            return None
        return data

    def put(self, key: str, payload: dict[str, Any]) -> None:
        text = json.dumps(payload, ensure_ascii=False, default=str)
        with self._lock:
            conn = self._connect()
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO nodes (key, payload, created) VALUES (?, ?, ?)",
                    (key, text, time.time()),
                )
                conn.commit()
            except sqlite3.Error as exc:
                raise ByokError(f"the pipeline cache could not be written ({exc})") from exc

    def clear(self) -> int:
        with self._lock:
            cur = self._connect().execute("DELETE FROM nodes")
            self._connect().commit()
            return int(cur.rowcount)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


_caches: dict[Path, NodeCache] = {}
_caches_lock = threading.Lock()


def default_cache() -> NodeCache:
    """One cache object per ``JUPYTER_BYOK_HOME`` (tests switch homes between tests)."""
    from ..config import byok_home

    path = byok_home() / "pipeline-cache.sqlite"
    with _caches_lock:
        cache = _caches.get(path)
        if cache is None:
            cache = _caches[path] = NodeCache(path)
        return cache
