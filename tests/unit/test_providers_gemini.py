"""Gemini generateContent / streamGenerateContent?alt=sse against the loopback fake."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from jupyter_byok.errors import (
    AuthenticationError,
    BadRequestError,
    QuotaExceededError,
    RateLimitError,
    StreamError,
)
from jupyter_byok.providers import BUILTIN, dispatch
from jupyter_byok.providers.base import RetryPolicy
from jupyter_byok.redact import Secret
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Attempt, Message, StreamEvent, Usage

pytest_plugins = ["jupyter_byok.testing.pytest_plugin"]

GEMINI = BUILTIN["gemini"]
KEY = Secret("AIzaSyTest0gemini0key0000000000000000001")
FAST = RetryPolicy(initial_delay=0.001, max_delay=0.005)
MESSAGES = [
    Message("system", "Be brief."),
    Message("user", "Hi there"),
    Message("assistant", "Hello."),
    Message("user", "Count to three"),
]


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


async def collect(client: httpx.AsyncClient, **params: object) -> list[StreamEvent]:
    return [
        e
        async for e in dispatch.stream(
            GEMINI, "gemini-2.5-flash", MESSAGES, dict(params), KEY, client=client, retry=FAST
        )
    ]


@pytest.mark.asyncio
async def test_complete_and_stream_agree(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    result = await dispatch.complete(GEMINI, "gemini-2.5-flash", MESSAGES, {}, KEY, client=client)
    events = await collect(client)
    assert result.text == "".join(e.delta for e in events) == "Echo: Count to three"
    assert result.usage == events[-1].usage == Usage(input_tokens=8, output_tokens=4)
    assert result.finish_reason == events[-1].finish_reason == "STOP"
    plain, streamed = fake_providers.requests
    assert plain.path == "/gemini/v1beta/models/gemini-2.5-flash:generateContent"
    assert streamed.path == "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert streamed.query == {"alt": ["sse"]}
    for sent in (plain, streamed):
        assert sent.headers["x-goog-api-key"] == KEY.reveal()
        assert "key" not in sent.query  # never in the URL
    assert plain.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in plain.body["contents"]] == ["user", "model", "user"]
    assert fake_providers.errors == []


@pytest.mark.asyncio
async def test_thoughts_and_cache_usage(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.set_usage("gemini", cached=5, reasoning=7)
    result = await dispatch.complete(GEMINI, "gemini-2.5-flash", MESSAGES, {}, KEY, client=client)
    events = await collect(client)
    expected = Usage(input_tokens=8, cached_input_tokens=5, output_tokens=4 + 7, reasoning_tokens=7)
    assert result.usage == expected == events[-1].usage  # last chunk's cumulative usage


@pytest.mark.asyncio
async def test_generation_config_mapping(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    params = {
        "temperature": 0.1,
        "max_tokens": 2,
        "top_p": 0.5,
        "stop": "x",
        "seed": 3,
        "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}},
        "safetySettings": [],
    }
    result = await dispatch.complete(
        GEMINI, "gemini-2.5-flash", MESSAGES, params, KEY, client=client
    )
    body = fake_providers.requests[-1].body
    assert body["generationConfig"] == {
        "temperature": 0.1,
        "maxOutputTokens": 2,
        "topP": 0.5,
        "stopSequences": ["x"],
        "seed": 3,
        "thinkingConfig": {"thinkingBudget": 0},
    }
    assert body["safetySettings"] == []
    assert result.finish_reason == "MAX_TOKENS" and result.text == "Echo: Count"


@pytest.mark.asyncio
async def test_errors(fake_providers: FakeProviders, client: httpx.AsyncClient) -> None:
    fake_providers.set_keys("gemini", "AIza-other")
    with pytest.raises(AuthenticationError, match="400 API_KEY_INVALID: API key not valid"):
        await dispatch.complete(GEMINI, "gemini-2.5-flash", MESSAGES, {}, KEY, client=client)
    fake_providers.set_keys("gemini")
    with pytest.raises(BadRequestError, match="404 NOT_FOUND"):
        await dispatch.complete(GEMINI, "missing-gemini", MESSAGES, {}, KEY, client=client)
    fake_providers.add_fault("gemini", "quota")
    with pytest.raises(QuotaExceededError, match="429"):
        await dispatch.complete(
            GEMINI, "gemini-2.5-flash", MESSAGES, {}, KEY, client=client, retry=FAST
        )
    fake_providers.add_fault("gemini", "rate_limit", times=3)
    with pytest.raises(RateLimitError, match="RESOURCE_EXHAUSTED"):
        await dispatch.complete(
            GEMINI, "gemini-2.5-flash", MESSAGES, {}, KEY, client=client, retry=FAST
        )
    # 1 + 1 + 1 quota (never retried) + 3 rate limited (retried twice)
    assert len(fake_providers.requests) == 6


@pytest.mark.asyncio
async def test_missing_key_is_refused_by_the_provider(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    with pytest.raises(AuthenticationError, match="403 PERMISSION_DENIED"):
        await dispatch.complete(GEMINI, "gemini-2.5-flash", MESSAGES, {}, None, client=client)


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("drop_stream", "broke off midway"),
        ("malformed_chunk", "malformed chunk"),
        ("stream_error", "UNAVAILABLE"),
    ],
)
@pytest.mark.asyncio
async def test_broken_streams(
    fake_providers: FakeProviders, client: httpx.AsyncClient, kind: str, match: str
) -> None:
    fake_providers.add_fault("gemini", kind, after=2)
    attempts: list[Attempt] = []
    seen: list[str] = []
    with pytest.raises(StreamError, match=match):
        async for event in dispatch.stream(
            GEMINI, "gemini-2.5-flash", MESSAGES, {}, KEY, client=client,
            on_attempt=attempts.append,
        ):  # fmt: skip
            seen.append(event.delta)
    assert seen == ["Echo:", " Count"]
    assert [a.status for a in attempts] == ["error"]
    assert attempts[0].usage == Usage(input_tokens=8, output_tokens=2)  # known so far


@pytest.mark.asyncio
async def test_models(fake_providers: FakeProviders, client: httpx.AsyncClient) -> None:
    models = await dispatch.list_models(GEMINI, KEY, client=client)
    assert models == ["gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro"]
    sent = fake_providers.requests[-1]
    assert sent.path == "/gemini/v1beta/models" and "key" not in sent.query


@pytest.mark.asyncio
async def test_bare_json_error_after_the_stream_started(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.add_fault("gemini", "stream_error", after=1, raw=True)
    attempts: list[Attempt] = []
    with pytest.raises(StreamError, match="broke off with an error: The model is overloaded"):
        async for _ in dispatch.stream(
            GEMINI, "gemini-2.5-flash", MESSAGES, {}, KEY, client=client,
            on_attempt=attempts.append,
        ):  # fmt: skip
            pass
    assert [a.status for a in attempts] == ["error"]
