"""Tavily web search (``POST /search``) and its free key check (``GET /usage``).

We always ask for ``include_usage`` so the credits Tavily bills (1 for basic, fast and
ultra-fast, 2 for advanced) come from Tavily itself; when an older server omits them,
the credits are derived from the depth that was asked for.
"""

from __future__ import annotations

from typing import Any

from ..types import SearchResult, Usage
from .base import WireRequest

__all__ = ["auth_headers", "describe_usage", "parse_search", "search_request", "usage_request"]

_RENAMED = {"depth": "search_depth"}
_CREDITS = {"advanced": 2.0}


def auth_headers(provider: str, key: Any) -> dict[str, str]:
    return {"authorization": "Bearer " + key.reveal()} if key else {}


def search_request(base_url: str, query: str, params: dict[str, Any]) -> WireRequest:
    body: dict[str, Any] = {"query": query, "search_depth": "basic", "include_usage": True}
    for name, value in params.items():
        if value is not None:
            body[_RENAMED.get(name, name)] = value
    return WireRequest("POST", base_url + "/search", {"x-client-source": "jupyter-byok"}, body)


def parse_search(query: str, params: dict[str, Any], data: Any) -> SearchResult:
    usage = data.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("credits"), (int, float)):
        credits = float(usage["credits"])
    else:
        depth = params.get("depth") or params.get("search_depth") or "basic"
        credits = _CREDITS.get(str(depth), 1.0)
    results = [
        {
            "title": r.get("title", ""),
            "url": r.get("url", ""),
            "content": r.get("content", ""),
            "score": r.get("score"),
            **({"raw_content": r["raw_content"]} if r.get("raw_content") else {}),
        }
        for r in data.get("results") or ()
        if isinstance(r, dict)
    ]
    rid = str(data.get("request_id") or "")
    return SearchResult(
        query=str(data.get("query") or query),
        results=results,
        answer=data.get("answer"),
        usage=Usage(search_credits=credits),
        request_id=rid,
        response_id=rid or None,
    )


def usage_request(base_url: str) -> WireRequest:
    return WireRequest("GET", base_url + "/usage")


def describe_usage(data: Any) -> str:
    key = data.get("key") if isinstance(data, dict) else None
    if isinstance(key, dict) and key.get("limit") is not None:
        return f"{key.get('usage', 0)} of {key['limit']} credits used"
    return "key accepted"
