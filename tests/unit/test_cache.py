"""Response cache: equal requests hit, different ones miss; expiry, size bound, stats."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from jupyter_byok.cache import ResponseCache, cache_key
from jupyter_byok.types import Message

MSGS = [{"role": "user", "content": "Say hi"}]


def test_keys_hit_only_for_equal_requests() -> None:
    k = cache_key("openai", "gpt-4o-mini", MSGS, {"temperature": 0.0, "max_tokens": 50})
    assert len(k) == 64
    # order of params, int/float spelling, Message objects and transport-only params: same key
    same = [
        cache_key("openai", "gpt-4o-mini", MSGS, {"max_tokens": 50, "temperature": 0}),
        cache_key("openai", "gpt-4o-mini", [Message("user", "Say hi")], {"max_tokens": 50.0, "temperature": 0, "stream": True, "timeout": 3}),
    ]  # fmt: skip
    assert all(s == k for s in same)
    different = [
        cache_key("anthropic", "gpt-4o-mini", MSGS, {"temperature": 0.0, "max_tokens": 50}),
        cache_key("openai", "gpt-4o", MSGS, {"temperature": 0.0, "max_tokens": 50}),
        cache_key("openai", "gpt-4o-mini", [{"role": "user", "content": "Say hi!"}], {"temperature": 0.0, "max_tokens": 50}),
        cache_key("openai", "gpt-4o-mini", [{"role": "system", "content": "Say hi"}], {"temperature": 0.0, "max_tokens": 50}),
        cache_key("openai", "gpt-4o-mini", MSGS, {"temperature": 0.2, "max_tokens": 50}),
        cache_key("openai", "gpt-4o-mini", MSGS, {"temperature": 0.0, "max_tokens": 51}),
        cache_key("openai", "gpt-4o-mini", MSGS, {"temperature": 0.0, "max_tokens": 50, "seed": 1}),
    ]  # fmt: skip
    assert len({k, *different}) == 1 + len(different)


def test_put_get_saved_cost_and_stats(byok_home: Path) -> None:
    cache = ResponseCache()
    k = cache_key("openai", "gpt-4o-mini", MSGS, {})
    assert cache.get(k) is None
    payload = {
        "text": "hi",
        "usage": {"input_tokens": 9, "output_tokens": 1},
        "cost_usd": "0.0000019",
    }
    cache.put(k, payload, Decimal("0.0000019"))
    assert cache.path == byok_home / "cache.sqlite3"
    assert (cache.path.stat().st_mode & 0o077) == 0
    again = ResponseCache()  # another process or call sees the same entry
    assert again.get(k) == payload and again.get(k) == payload
    assert again.saved_cost(k) == Decimal("0.0000019")
    st = again.stats()
    assert st["entries"] == 1 and st["hits"] == 2 and st["saved_usd"] == "0.0000038"
    assert cache.misses == 1
    assert again.clear() == 1 and again.get(k) is None


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_expiry_and_size_bound(tmp_path: Path) -> None:
    clock = FakeClock()
    cache = ResponseCache(tmp_path / "c.db", ttl_s=60, clock=clock)
    cache.put("a", {"text": "x"})
    clock.now += 59.9
    assert cache.get("a") == {"text": "x"}
    clock.now += 0.2
    assert cache.get("a") is None
    small = ResponseCache(tmp_path / "s.db", ttl_s=None, max_bytes=300, clock=clock)
    for i in range(10):
        small.put(f"k{i}", {"text": "y" * 90})
        small.get("k0")  # k0 stays recently used
        clock.now += 1
    st = small.stats()
    assert st["bytes"] <= 300 and st["entries"] >= 2
    assert small.get("k0") is not None and small.get("k9") is not None
    assert small.get("k1") is None


def test_one_cache_file_two_namespaces(byok_home: Path) -> None:
    """Calls and pipeline nodes share one content-addressed store and one key rule; each
    namespace keeps its own expiry, size bound, stats and clear."""
    import sqlite3

    from jupyter_byok.cache import content_key
    from jupyter_byok.pipeline._cache import NodeCache, default_cache, llm_key

    # the node keys follow the call keys' rule: 1 and 1.0 ask the same thing
    msgs = [Message("user", "Say hi")]
    assert llm_key("openai", "m", msgs, {"max_tokens": 50}) == llm_key(
        "openai", "m", msgs, {"max_tokens": 50.0}
    )
    assert content_key("node", {"a": 1}) != content_key("call", {"a": 1})

    calls, nodes = ResponseCache(), default_cache()
    assert isinstance(nodes, NodeCache) and nodes.path == calls.path
    calls.put("k-call", {"text": "answer"}, Decimal("0.5"))
    nodes.put("k-node", {"output": "node output"})
    assert nodes.get("k-call") is None and calls.get("k-node") is None
    assert calls.stats()["entries"] == 1 and nodes.stats()["entries"] == 1
    assert nodes.ttl_s is None and nodes.max_bytes is None  # kept until cleared
    assert nodes.clear() == 1
    assert calls.get("k-call") == {"text": "answer"} and nodes.get("k-node") is None

    # a cache file written before the namespaces were added is read as the call namespace
    old = byok_home / "old.sqlite3"
    with sqlite3.connect(old) as db:
        db.execute(
            "CREATE TABLE entries (key TEXT PRIMARY KEY, payload TEXT NOT NULL, "
            "cost_pico INTEGER, created REAL NOT NULL, last_used REAL NOT NULL, "
            "size INTEGER NOT NULL, hits INTEGER NOT NULL DEFAULT 0)"
        )
        db.execute(
            "INSERT INTO entries VALUES ('k', '{\"text\": \"kept\"}', NULL, 9e9, 9e9, 16, 0)"
        )
    db.close()
    assert ResponseCache(old, ttl_s=None).get("k") == {"text": "kept"}
    assert NodeCache(old).get("k") is None
