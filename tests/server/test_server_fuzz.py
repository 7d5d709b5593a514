"""Property: no client input makes ``/byok/*`` answer 500 or log a traceback.

Hypothesis draws requests for every route and verb of ``server.handlers.ROUTES`` (taken
from the table itself, so a new route is fuzzed too): bodies shaped like each route's
fields with values of any JSON type (NaN and infinities included), arbitrary JSON,
bytes that are not JSON, deep nesting, and random query strings. They go to a real
in-process Jupyter server with the fake providers, with a key stored so that calls get
past the key lookup. Hypothesis generates the requests up front (the server is async, a
``@given`` body is not), a bounded number, so that the test takes seconds.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from jupyter_byok.server.handlers import ROUTES
from jupyter_byok.testing import FakeProviders

CANARY = "sk-proj-FUZZCANARY" + "f" * 40 + "T3BlbkFJ" + "z" * 20
EXAMPLES = 400
VERBS = ("get", "post", "put", "delete", "patch")

#: field names each route reads, so that drawn bodies reach past the first check
FIELDS: dict[str, list[str]] = {
    "complete": [
        "model",
        "messages",
        "prompt",
        "system",
        "params",
        "stream",
        "feature",
        "origin",
        "cache",
    ],
    "search": [
        "query",
        "depth",
        "feature",
        "origin",
        "max_results",
        "include_answer",
        "include_domains",
        "topic",
        "days",
        "timeout",
        "key",
        "search_depth",
    ],
    "keys": ["provider", "key", "name", "tier", "base_url", "allow_http"],
    "budgets": ["budgets"],
    "config": ["default_model", "aliases", "endpoints", "require_server"],
    "usage": ["since", "until", "by", "bucket", "limit", "provider", "model", "notebook"],
    "prices": ["model"],
}
PARAM_NAMES = [
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "n",
    "timeout",
    "model",
    "stream",
    "messages",
    "response_format",
    "logprobs",
]
WORDS = st.sampled_from(
    [
        "openai",
        "anthropic",
        "gemini",
        "xai",
        "tavily",
        "secret",
        "local",
        "openai:gpt-4o-mini",
        "gemini:../../x",
        "anthropic:claude-haiku-4-5",
        "user",
        "system",
        "assistant",
        "tool",
        "day",
        "month",
        "call",
        "total",
        "7d",
        "today",
        "99999999999d",
        "provider,model",
        "basic",
        "advanced",
        "default",
        "work",
        "0",
        "-1",
        "abc",
        "NaN",
        "",
        " ",
        "http://127.0.0.1:9/x",
        "gopher://127.0.0.1/",
        "openai",
        "evil",
        "ftp:",
        "1e400",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    WORDS,
    st.text(max_size=12),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(WORDS, st.text(max_size=8)), inner, max_size=4)
    ),
    max_leaves=12,
)


def shaped(route: str) -> st.SearchStrategy[Any]:
    """A dict of this route's field names (and a stray one) with values of any type."""
    names = [*FIELDS.get(route, ["name", "id", "data"]), "colour"]
    value = st.one_of(
        JSON,
        st.dictionaries(st.sampled_from(PARAM_NAMES), JSON, max_size=3),
        st.lists(st.dictionaries(st.sampled_from(["role", "content", "name"]), JSON), max_size=3),
        st.lists(
            st.fixed_dictionaries(
                {"period": WORDS, "limit_usd": SCALARS},
                optional={"scope": WORDS, "target": WORDS, "warn_at": SCALARS},
            ),
            max_size=2,
        ),
    )
    return st.dictionaries(st.sampled_from(names), value, max_size=5)


def body(route: str) -> st.SearchStrategy[bytes]:
    nested = st.builds(
        lambda n, opener: (opener * n + "1" + ("]" if opener == "[" else "}") * n).encode(),
        st.integers(1, 3000),
        st.sampled_from(["[", '{"a":']),
    )
    as_json = st.one_of(shaped(route), JSON).map(
        lambda v: json.dumps(v, allow_nan=True).encode()  # NaN, Infinity as Python writes them
    )
    return st.one_of(as_json, as_json, nested, st.binary(max_size=64), st.just(b""))


def verbs_of(handler: type) -> list[str]:
    from tornado.web import RequestHandler

    return [v for v in VERBS if getattr(handler, v) is not getattr(RequestHandler, v)]


def concrete(pattern: str, segment: str) -> str:
    return re.sub(r"\([^)]*\)", segment, pattern)


REQUESTS = st.sampled_from(
    [(pattern, verb) for pattern, handler in ROUTES for verb in verbs_of(handler)]
    + [(pattern, "patch") for pattern, _ in ROUTES[:3]]  # a verb nobody handles: 405
).flatmap(
    lambda rv: st.tuples(
        st.just(concrete(rv[0], "SEGMENT")),
        st.just(rv[1].upper()),
        st.text(st.sampled_from("abcdefABCDEF0123456789"), min_size=1, max_size=24),
        body(rv[0].split("/")[0]),
        st.dictionaries(
            st.sampled_from([*FIELDS.get(rv[0], ["model", "x"]), "1795786161459"]),
            st.one_of(WORDS, st.text(max_size=10)),
            max_size=3,
        ),
    )
)


def draw_requests() -> list[tuple[str, str, str, bytes, dict[str, str]]]:
    drawn: list[tuple[str, str, str, bytes, dict[str, str]]] = []

    @settings(
        max_examples=EXAMPLES,
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(REQUESTS)
    def collect(request: tuple[str, str, str, bytes, dict[str, str]]) -> None:
        drawn.append(request)

    collect()
    return drawn


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_byok": True}, "allow_root": True}}


def test_every_route_and_verb_is_drawn() -> None:
    drawn = {(path.split("/")[0], verb) for path, verb, *_ in draw_requests()}
    for pattern, handler in ROUTES:
        for verb in verbs_of(handler):
            assert (pattern.split("/")[0], verb.upper()) in drawn, (pattern, verb)


async def test_no_client_input_is_a_500_or_a_traceback(
    jp_fetch: Any, caplog: pytest.LogCaptureFixture, fake_providers: FakeProviders
) -> None:
    caplog.set_level(logging.INFO)
    stored = await jp_fetch(
        "byok", "keys", method="POST", body=json.dumps({"provider": "openai", "key": CANARY})
    )
    key_id = json.loads(stored.body)["id"]
    seen: dict[int, int] = {}
    for path, verb, segment, raw, query in draw_requests():
        # half the key routes name the stored key, so that delete and verify act on it
        path = path.replace("SEGMENT", key_id if len(segment) % 2 else segment)
        response = await jp_fetch(
            "byok",
            *path.split("/"),
            method=verb,
            body=raw if verb in ("POST", "PUT", "PATCH") else None,
            params=query if verb in ("GET", "DELETE") else None,
            allow_nonstandard_methods=True,
            raise_error=False,
        )
        seen[response.code] = seen.get(response.code, 0) + 1
        request = f"{verb} /byok/{path}?{query} {raw[:200]!r}"
        assert response.code < 500 or response.code == 502, (response.code, request)
        assert CANARY.encode() not in (response.body or b""), request
        if response.code >= 400 and response.body:
            text = response.body.decode(errors="replace")
            assert "Traceback" not in text, request
        broken = [r for r in caplog.records if r.exc_info or r.exc_text]
        assert not broken, (request, broken[0].getMessage())
    assert "Traceback" not in caplog.text
    assert "Uncaught exception" not in caplog.text
    assert CANARY not in caplog.text
    # the draw reached past the checks too, not only 400s
    assert seen.get(400, 0) and sum(n for code, n in seen.items() if code < 300), seen
