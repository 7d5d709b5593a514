"""Anthropic Messages against the loopback fake: usage conversion, system, params, streams."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from jupyter_byok.errors import (
    AuthenticationError,
    BadRequestError,
    ProviderServerError,
    QuotaExceededError,
    StreamError,
)
from jupyter_byok.providers import BUILTIN, dispatch
from jupyter_byok.providers.base import RetryPolicy
from jupyter_byok.redact import Secret
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Attempt, Message, StreamEvent, Usage

pytest_plugins = ["jupyter_byok.testing.pytest_plugin"]

ANTHROPIC = BUILTIN["anthropic"]
KEY = Secret("sk-ant-api03-test0anthropic0key000000000000000001")
FAST = RetryPolicy(initial_delay=0.001, max_delay=0.005)
MESSAGES = [
    Message("system", "Answer in French."),
    Message("system", "Be brief."),
    Message("user", "Name a colour please"),
]


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


async def collect(client: httpx.AsyncClient, **params: object) -> list[StreamEvent]:
    return [
        e
        async for e in dispatch.stream(
            ANTHROPIC, "claude-sonnet-4-6", MESSAGES, dict(params), KEY, client=client, retry=FAST
        )
    ]


@pytest.mark.asyncio
async def test_complete_and_stream_agree(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    result = await dispatch.complete(
        ANTHROPIC, "claude-sonnet-4-6", MESSAGES, {}, KEY, client=client
    )
    events = await collect(client)
    assert result.text == "".join(e.delta for e in events) == "Echo: Name a colour please"
    assert result.usage == events[-1].usage == Usage(input_tokens=9, output_tokens=5)
    assert result.finish_reason == events[-1].finish_reason == "end_turn"
    assert result.response_id and result.response_id.startswith("msg_")
    first = fake_providers.requests[0]
    assert first.path == "/anthropic/v1/messages"
    assert first.headers["x-api-key"] == KEY.reveal()
    assert first.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in first.headers
    assert first.body["system"] == "Answer in French.\n\nBe brief."
    assert first.body["messages"] == [{"role": "user", "content": "Name a colour please"}]
    assert first.body["max_tokens"] == 1024  # Anthropic requires it: our default
    assert fake_providers.errors == []


@pytest.mark.asyncio
async def test_cache_and_thinking_usage_is_normalised(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.set_usage("anthropic", cached=3, cache_write_5m=2, cache_write_1h=3, reasoning=6)
    result = await dispatch.complete(
        ANTHROPIC, "claude-sonnet-4-6", MESSAGES, {}, KEY, client=client
    )
    events = await collect(client)
    expected = Usage(
        input_tokens=9,  # 1 uncached + 3 read + 2 + 3 written: every input token
        cached_input_tokens=3,
        cache_write_tokens=2,
        cache_write_1h_tokens=3,
        output_tokens=5 + 6,  # output includes thinking
        reasoning_tokens=6,
    )
    assert result.usage == expected
    assert events[-1].usage == expected  # cumulative message_delta usage
    assert result.text == "Echo: Name a colour please"  # the thinking block is not text
    assert "".join(e.delta for e in events) == result.text


@pytest.mark.asyncio
async def test_params_mapping_and_refusals(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    params = {"temperature": 0.5, "max_tokens": 2, "top_p": 0.8, "stop": "END", "top_k": 5}
    result = await dispatch.complete(
        ANTHROPIC, "claude-sonnet-4-6", MESSAGES, params, KEY, client=client
    )
    body = fake_providers.requests[-1].body
    assert body["stop_sequences"] == ["END"] and "stop" not in body
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["top_k"]) == (
        0.5,
        0.8,
        2,
        5,
    )
    assert result.finish_reason == "max_tokens" and result.text == "Echo: Name"
    attempts: list[Attempt] = []
    with pytest.raises(BadRequestError, match="anthropic does not take the `seed` parameter"):
        await dispatch.complete(
            ANTHROPIC, "claude-sonnet-4-6", MESSAGES, {"seed": 1}, KEY,
            client=client, on_attempt=attempts.append,
        )  # fmt: skip
    assert attempts == [] and len(fake_providers.requests) == 1  # nothing was sent


@pytest.mark.asyncio
async def test_overloaded_529_is_retried(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.add_fault("anthropic", "overloaded", times=2)
    attempts: list[Attempt] = []
    result = await dispatch.complete(
        ANTHROPIC, "claude-sonnet-4-6", MESSAGES, {}, KEY, client=client,
        retry=FAST, on_attempt=attempts.append,
    )  # fmt: skip
    assert result.text.startswith("Echo:")
    assert [a.http_status for a in attempts] == [529, 529, 200]
    fake_providers.add_fault("anthropic", "overloaded", times=3)
    with pytest.raises(ProviderServerError, match="529 overloaded_error: Overloaded") as info:
        await dispatch.complete(
            ANTHROPIC, "claude-sonnet-4-6", MESSAGES, {}, KEY, client=client, retry=FAST
        )
    assert info.value.request_id and info.value.request_id.startswith("req_")


@pytest.mark.asyncio
async def test_errors(fake_providers: FakeProviders, client: httpx.AsyncClient) -> None:
    fake_providers.set_keys("anthropic", "sk-ant-api03-other")
    with pytest.raises(AuthenticationError, match="401 authentication_error: invalid x-api-key"):
        await dispatch.complete(ANTHROPIC, "claude-sonnet-4-6", MESSAGES, {}, KEY, client=client)
    fake_providers.set_keys("anthropic")
    with pytest.raises(BadRequestError, match="404 not_found_error"):
        await dispatch.complete(ANTHROPIC, "missing-claude", MESSAGES, {}, KEY, client=client)
    fake_providers.add_fault("anthropic", "quota")
    with pytest.raises(QuotaExceededError, match="credit balance is too low"):
        await dispatch.complete(
            ANTHROPIC, "claude-sonnet-4-6", MESSAGES, {}, KEY, client=client, retry=FAST
        )
    assert len(fake_providers.requests) == 3  # none of these is retried


@pytest.mark.asyncio
async def test_error_event_midstream(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.add_fault("anthropic", "stream_error", after=5)
    attempts: list[Attempt] = []
    seen: list[str] = []
    with pytest.raises(StreamError, match="overloaded_error mid-stream"):
        async for event in dispatch.stream(
            ANTHROPIC, "claude-sonnet-4-6", MESSAGES, {}, KEY, client=client,
            on_attempt=attempts.append,
        ):  # fmt: skip
            seen.append(event.delta)
    assert seen == ["Echo:", " Name"]
    assert attempts[0].status == "error"
    assert attempts[0].usage == Usage(input_tokens=9, output_tokens=1)  # from message_start


@pytest.mark.asyncio
async def test_dropped_stream_keeps_partial_usage(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.add_fault("anthropic", "drop_stream", after=4)
    attempts: list[Attempt] = []
    with pytest.raises(StreamError, match="broke off midway"):
        async for _ in dispatch.stream(
            ANTHROPIC, "claude-sonnet-4-6", MESSAGES, {}, KEY, client=client,
            on_attempt=attempts.append,
        ):  # fmt: skip
            pass
    assert len(attempts) == 1 and attempts[0].usage is not None
    assert attempts[0].usage.input_tokens == 9


@pytest.mark.asyncio
async def test_models(fake_providers: FakeProviders, client: httpx.AsyncClient) -> None:
    models = await dispatch.list_models(ANTHROPIC, KEY, client=client)
    assert models == ["claude-haiku-4-5", "claude-opus-4-7", "claude-sonnet-4-6"]
    check = await dispatch.check_key(ANTHROPIC, KEY, client=client)
    assert check["ok"] and check["models"] == 3
    sent = fake_providers.requests[-1]
    assert sent.path == "/anthropic/v1/models" and sent.query == {"limit": ["1000"]}
    assert sent.headers["anthropic-version"] == "2023-06-01"


@pytest.mark.asyncio
async def test_closing_early_keeps_the_usage_known_so_far(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    attempts: list[Attempt] = []
    gen = dispatch.stream(
        ANTHROPIC, "claude-sonnet-4-6", MESSAGES, {}, KEY, client=client,
        on_attempt=attempts.append,
    )  # fmt: skip
    async with contextlib.aclosing(gen):
        async for event in gen:
            assert event.delta == "Echo:"
            break
    assert [a.status for a in attempts] == ["cancelled"]
    assert attempts[0].usage == Usage(input_tokens=9, output_tokens=1)  # from message_start
