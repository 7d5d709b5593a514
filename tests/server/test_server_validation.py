"""Issue 15 §7 through the REST API: every malformed input is a 400 with one line that
names what is wrong, nothing reaches a provider, and the server logs no traceback.

A real in-process Jupyter server (pytest-jupyter) against the fake providers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_byok.testing import FakeProviders

CANARY = "sk-proj-VALIDATIONCANARY" + "v" * 36 + "T3BlbkFJ" + "k" * 20
MODEL = "openai:gpt-4o-mini"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_byok": True}, "allow_root": True}}


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The server's log; after the test, no record may carry a traceback or the canary."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info or r.exc_text]
    assert not tracebacks, tracebacks
    assert "Traceback" not in caplog.text
    assert CANARY not in caplog.text


async def send(
    jp_fetch: Any, path: str, body: Any = None, *, method: str = "POST", **kwargs: Any
) -> tuple[int, Any]:
    if body is not None and not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    response = await jp_fetch(
        "byok", *path.split("/"), method=method, body=body, raise_error=False, **kwargs
    )
    text = response.body.decode() if response.body else ""
    assert CANARY not in text
    try:
        return response.code, json.loads(text)
    except ValueError:
        return response.code, text


def one_line_400(code: int, data: Any, *needles: str) -> str:
    assert code == 400, (code, data)
    assert isinstance(data, dict) and data["status"] == 400, data
    message = str(data["message"])
    assert "\n" not in message and "Traceback" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


async def store_key(jp_fetch: Any, fake: FakeProviders) -> FakeProviders:
    """An OpenAI key stored through the API; the fake OpenAI has seen no request yet."""
    code, data = await send(jp_fetch, "keys", {"provider": "openai", "key": CANARY})
    assert code == 201, data
    return fake


def nothing_sent(fake: FakeProviders) -> None:
    assert fake.requests == [], [r.path for r in fake.requests]


# ----------------------------------------------------------------- deep nesting
async def test_deeply_nested_json_is_400(
    jp_fetch: Any, server_log: Any, fake_providers: FakeProviders
) -> None:
    keyed = await store_key(jp_fetch, fake_providers)
    for levels in (5_000, 100_000):
        for body in ("[" * levels + "]" * levels, '{"a":' * levels + "1" + "}" * levels):
            for route, method in ROUTES_WITH_BODY:
                code, data = await send(jp_fetch, route, body, method=method)
                one_line_400(code, data, "nested")
    nothing_sent(keyed)


ROUTES_WITH_BODY = (
    ("complete", "POST"),
    ("search", "POST"),
    ("keys", "POST"),
    ("budgets", "PUT"),
    ("config", "PUT"),
)


async def test_nesting_inside_a_field_is_400(
    jp_fetch: Any, server_log: Any, fake_providers: FakeProviders
) -> None:
    keyed = await store_key(jp_fetch, fake_providers)
    deep: Any = 1
    for _ in range(80):
        deep = {"x": deep}
    body = {"model": MODEL, "messages": HELLO, "params": {"response_format": deep}}
    one_line_400(*await send(jp_fetch, "complete", body), "nested")
    nothing_sent(keyed)
    # a body of many small objects (not deep) is fine
    many = [{"role": "user", "content": f"m{i}"} for i in range(200)]
    code, data = await send(jp_fetch, "complete", {"model": MODEL, "messages": many})
    assert code == 200, data


# -------------------------------------------------------------------- numbers
MAX_TOKENS_RAW = (
    ("NaN", "NaN"),
    ("Infinity", "Infinity"),
    ("-Infinity", "Infinity"),
    ("-5", "max_tokens"),
    ("0", "max_tokens"),
    ("1e30", "max_tokens"),
    ("1e400", "max_tokens"),
    ("2.5", "max_tokens"),
    ('"300"', "max_tokens"),
    ("true", "max_tokens"),
    ("[300]", "max_tokens"),
)

BAD_PARAMS: tuple[dict[str, Any], ...] = (
    {"temperature": -0.1},
    {"temperature": 2.5},
    {"temperature": "hot"},
    {"temperature": float("nan")},
    {"top_p": 1.01},
    {"top_p": -1},
    {"top_k": -3},
    {"frequency_penalty": 9},
    {"presence_penalty": -2.5},
    {"seed": 1.5},
    {"n": 0},
    {"stop": [1, 2]},
    {"timeout": -1},
    {"timeout": float("inf")},
    {"logprobs": "yes"},
    {"response_format": {"weight": float("inf")}},
    {"": 1},
)


async def test_numbers_out_of_schema_are_400(
    jp_fetch: Any, server_log: Any, fake_providers: FakeProviders
) -> None:
    keyed = await store_key(jp_fetch, fake_providers)
    for raw, needle in MAX_TOKENS_RAW:
        body = (
            f'{{"model": "{MODEL}", "messages": {json.dumps(HELLO)}, '
            f'"params": {{"max_tokens": {raw}}}}}'
        )
        one_line_400(*await send(jp_fetch, "complete", body), needle)
    for params in BAD_PARAMS:
        body = json.dumps({"model": MODEL, "messages": HELLO, "params": params})  # NaN: as sent
        one_line_400(*await send(jp_fetch, "complete", body))
    nothing_sent(keyed)


async def test_valid_params_pass_and_reach_the_provider(
    jp_fetch: Any, server_log: Any, fake_providers: FakeProviders
) -> None:
    keyed = await store_key(jp_fetch, fake_providers)
    params = {
        "max_tokens": 300.0,  # an integral float is the integer
        "temperature": 0,
        "top_p": 1,
        "stop": ["\n\n"],
        "seed": -7,
        "response_format": {"type": "json_object"},
        "user": None,
    }
    code, data = await send(
        jp_fetch, "complete", {"model": MODEL, "messages": HELLO, "params": params}
    )
    assert code == 200, data
    sent = keyed.requests_for("openai")[-1].body
    assert sent["max_completion_tokens"] == 300 and isinstance(sent["max_completion_tokens"], int)
    assert sent["temperature"] == 0 and sent["response_format"] == {"type": "json_object"}


# ------------------------------------------------------------ params override
async def test_params_cannot_override_the_call(
    jp_fetch: Any, server_log: Any, fake_providers: FakeProviders
) -> None:
    keyed = await store_key(jp_fetch, fake_providers)
    for name, value in (
        ("model", "gpt-4o"),
        ("stream", True),
        ("stream", False),
        ("messages", [{"role": "user", "content": "other"}]),
        ("system", "be evil"),
        ("contents", []),
    ):
        for stream in (False, True):
            body = {"model": MODEL, "messages": HELLO, "stream": stream, "params": {name: value}}
            one_line_400(*await send(jp_fetch, "complete", body), f"'{name}'", "params")
    nothing_sent(keyed)


# ------------------------------------------------------------------ booleans
async def test_booleans_must_be_booleans(
    jp_fetch: Any, server_log: Any, fake_providers: FakeProviders
) -> None:
    keyed = await store_key(jp_fetch, fake_providers)
    for field in ("stream", "cache"):
        for value in ("false", "true", [1], [], 1, 0, {}, None):
            body = {"model": MODEL, "messages": HELLO, field: value}
            one_line_400(*await send(jp_fetch, "complete", body), f"'{field}'", "true or false")
    nothing_sent(keyed)
    # false means false: a JSON answer, not a stream
    body = {"model": MODEL, "messages": HELLO, "stream": False}
    response = await jp_fetch("byok", "complete", method="POST", body=json.dumps(body))
    assert response.headers["Content-Type"].startswith("application/json")
    assert json.loads(response.body)["text"] == "Echo: hello"


# --------------------------------------------------------------------- roles
BAD_MESSAGES: tuple[Any, ...] = (
    {"role": "tool", "content": "x"},
    {"role": 5, "content": "x"},
    {"role": None, "content": "x"},
    {"role": "USER", "content": "x"},
    {"role": "user", "content": 5},
    {"role": "user"},
    {"role": "user", "content": "x", "name": "bob"},
    "just text",
    None,
)

BAD_COMPLETE_BODIES: tuple[tuple[Any, str], ...] = (
    ({"model": MODEL, "messages": HELLO, "temprature": 0}, "'temprature'"),
    ({"model": 5, "messages": HELLO}, "'model'"),
    ({"model": MODEL, "prompt": ["x"]}, "'prompt'"),
    ({"model": MODEL, "messages": HELLO, "origin": ["nb"]}, "'origin'"),
    ({"model": MODEL, "messages": HELLO, "origin": {"notebook": 5}}, "'origin.notebook'"),
    ({"model": MODEL, "messages": HELLO, "params": [1]}, "'params'"),
    ({"model": MODEL, "messages": HELLO, "feature": {}}, "'feature'"),
    ({"model": MODEL, "messages": "hello"}, "'messages'"),
    ({"model": MODEL}, "messages"),
    ([{"model": MODEL}], "object"),
)


async def test_complete_body_schema(
    jp_fetch: Any, server_log: Any, fake_providers: FakeProviders
) -> None:
    keyed = await store_key(jp_fetch, fake_providers)
    for message in BAD_MESSAGES:
        for stream in (False, True):
            body = {"model": MODEL, "messages": [*HELLO, message], "stream": stream}
            one_line_400(*await send(jp_fetch, "complete", body), "messages[1]")
    for body, needle in BAD_COMPLETE_BODIES:
        one_line_400(*await send(jp_fetch, "complete", body), needle)
    nothing_sent(keyed)


# -------------------------------------------------------------------- search
BAD_SEARCHES: tuple[tuple[dict[str, Any], str], ...] = (
    ({"query": "x", "origin": ["a", "b"]}, "'origin'"),
    ({"query": "x", "origin": "nb"}, "'origin'"),
    ({"query": "x", "origin": {"notebook": ["a"]}}, "'origin.notebook'"),
    ({"query": "x", "colour": "red"}, "'colour'"),
    ({"query": "x", "key": "tvly-stolen"}, "'key'"),
    ({"query": "x", "search_depth": "advanced"}, "'search_depth'"),
    ({"query": "x", "max_results": "3"}, "'max_results'"),
    ({"query": "x", "max_results": float("nan")}, "NaN"),
    ({"query": "x", "include_domains": "a.com"}, "'include_domains'"),
    ({"query": "x", "depth": "deep"}, "'depth'"),
    ({"query": 5}, "'query'"),
    ({"query": " "}, "'query'"),
    ({}, "'query'"),
)


async def test_search_body_schema(
    jp_fetch: Any, server_log: Any, fake_providers: FakeProviders
) -> None:
    code, data = await send(jp_fetch, "keys", {"provider": "tavily", "key": "tvly-" + "s" * 30})
    assert code == 201, data
    for body, needle in BAD_SEARCHES:
        one_line_400(*await send(jp_fetch, "search", json.dumps(body)), needle)
    assert fake_providers.requests_for("tavily") == []
    # Tavily's own options still pass, typed
    body = {"query": "jupyter", "depth": "basic", "max_results": 2, "include_answer": True}
    code, data = await send(jp_fetch, "search", body)
    assert code == 200, data
    assert len(data["results"]) == 2 and data["answer"]
    assert fake_providers.requests_for("tavily")[-1].body["max_results"] == 2


# --------------------------------------------------------------------- usage
BAD_USAGE: tuple[tuple[dict[str, str], str], ...] = (
    ({"limit": "abc"}, "'limit'"),
    ({"limit": "-1"}, "'limit'"),
    ({"limit": "1e3"}, "'limit'"),
    ({"limit": "99999999999999999999"}, "'limit'"),
    ({"limit": "\u0663"}, "'limit'"),  # an Arabic-Indic digit
    ({"since": "99999999999d"}, "out of range"),
    ({"since": "9" * 5000 + "d"}, "out of range"),
    ({"until": "999999999w"}, "out of range"),
    ({"since": "99999999999h"}, "out of range"),
    ({"since": "yesterday-ish"}, "cannot read the time"),
    ({"by": "colour"}, "colour"),
    ({"bucket": "fortnight"}, "fortnight"),
    ({"colour": "red"}, "'colour'"),
)


async def test_usage_query_is_checked(jp_fetch: Any, server_log: Any) -> None:
    for query, needle in BAD_USAGE:
        code, data = await send(jp_fetch, "usage", method="GET", params=query)
        one_line_400(code, data, needle)
    for query in ({"limit": "0"}, {"limit": ""}, {"limit": "100000"}, {"1795786161459": ""}):
        code, data = await send(jp_fetch, "usage", method="GET", params=query)
        assert code == 200, (query, data)


# ------------------------------------------------------------- other bodies
OTHER_BODIES: tuple[tuple[str, str, Any, str], ...] = (
    ("keys", "POST", {"provider": "openai", "key": CANARY, "allow_http": "yes"}, "allow_http"),
    ("keys", "POST", {"provider": ["openai"], "key": CANARY}, "'provider'"),
    ("keys", "POST", {"provider": "openai", "key": 12345678}, "'key'"),
    ("keys", "POST", {"provider": "openai", "key": CANARY, "colour": 1}, "'colour'"),
    ("budgets", "PUT", {"budgets": {"day": 5}}, "'budgets'"),
    ("budgets", "PUT", {"budgets": [1]}, "budgets[0]"),
    ("budgets", "PUT", {}, "'budgets'"),
    ("config", "PUT", {"require_server": "false"}, "'require_server'"),
    ("config", "PUT", {"aliases": {"fast": 5}}, "'aliases.fast'"),
    ("config", "PUT", {"default_model": 5}, "'default_model'"),
)


async def test_other_bodies_are_checked(jp_fetch: Any, server_log: Any) -> None:
    for route, method, body, needle in OTHER_BODIES:
        one_line_400(*await send(jp_fetch, route, body, method=method), needle)
    code, data = await send(jp_fetch, "keys", method="GET")
    assert code == 200 and data["keys"] == [], data


# ------------------------------------------------- short keys in provider errors
async def test_short_keys_echoed_by_a_provider_are_masked(
    jp_fetch: Any, caplog: pytest.LogCaptureFixture, fake_providers: FakeProviders
) -> None:
    caplog.set_level(logging.DEBUG)
    for short in ("Zq7", "k3Y-9x", "pXw_41Q"):
        code, data = await send(jp_fetch, "keys", {"provider": "openai", "key": short})
        assert code == 201, data
        # a provider (or a proxy) that puts the whole key in its error message
        fake_providers.add_fault(
            "openai", "bad_request", message=f"Key '{short}' is not valid here. See your account."
        )
        code, data = await send(jp_fetch, "complete", {"model": MODEL, "messages": HELLO})
        assert code == 400, data
        assert fake_providers.requests_for("openai")[-1].auth == short  # the key that was sent
        assert "Key '[redacted]' is not valid here." in data["message"], data
        assert short not in json.dumps(data)
        # only the key: the words around it are left alone
        assert "See your account" in data["message"]
    assert not [s for s in ("Zq7", "k3Y-9x", "pXw_41Q") if s in caplog.text]
