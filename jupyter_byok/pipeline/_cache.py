"""The pipeline's node cache: the ``node`` namespace of the content-addressed cache
(:mod:`jupyter_byok.cache`), keyed by what produced a node's output.

A key covers a node's *resolved* configuration: kind, provider and model (after aliases,
without the key name), the exact messages or query sent, and the parameters. The
pipeline and node names are not part of it, so renaming a node keeps its cache and a map
interrupted halfway resumes where it stopped. Entries hold outputs, usage and the original
cost, never a key; they are kept until cleared (no expiry, no eviction).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from ..cache import ContentCache, content_key

__all__ = ["NodeCache", "default_cache", "llm_key", "node_key", "search_key"]


def node_key(config: dict[str, Any]) -> str:
    # values JSON cannot hold (a callable's name, a path) are keyed by their text
    plain = json.loads(json.dumps(config, ensure_ascii=False, default=str))
    return content_key("node", plain)


def llm_key(provider: str, model: str, messages: list[Any], params: dict[str, Any]) -> str:
    """The cache key of an LLM node: what decides its answer (run and estimate share it)."""
    return node_key(
        {
            "kind": "llm",
            "provider": provider,
            "model": model,
            "messages": [m.to_dict() for m in messages],
            "params": params,
        }
    )


def search_key(query: str, depth: str, params: dict[str, Any]) -> str:
    """The cache key of a search node."""
    return node_key({"kind": "search", "query": query, "depth": depth, "params": params})


class NodeCache(ContentCache):
    """The ``node`` namespace: finished node outputs, kept until cleared."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path, namespace="node", ttl_s=None, max_bytes=None)


_caches: dict[Path, NodeCache] = {}
_caches_lock = threading.Lock()


def default_cache() -> NodeCache:
    """One cache object per ``JUPYTER_BYOK_HOME`` (tests switch homes between tests)."""
    from ..config import byok_home

    path = byok_home() / "cache.sqlite3"
    with _caches_lock:
        cache = _caches.get(path)
        if cache is None:
            cache = _caches[path] = NodeCache(path)
        return cache
