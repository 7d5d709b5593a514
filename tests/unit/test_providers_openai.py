"""OpenAI chat completions (and OpenAI-compatible endpoints) against the loopback fake."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from jupyter_byok.errors import (
    AuthenticationError,
    BadRequestError,
    ProviderConnectionError,
    ProviderError,
    QuotaExceededError,
    StreamError,
)
from jupyter_byok.keys import Keystore, verify_key
from jupyter_byok.providers import BUILTIN, ProviderSpec, dispatch
from jupyter_byok.providers.base import CallResult, FinalEvent, RetryPolicy, make_async_client
from jupyter_byok.redact import Secret
from jupyter_byok.testing import FakeProviders, tokens
from jupyter_byok.types import Attempt, Message, StreamEvent, Usage

pytest_plugins = ["jupyter_byok.testing.pytest_plugin"]

OPENAI = BUILTIN["openai"]
KEY = Secret("sk-proj-test0openai0key0000000000000001")
FAST = RetryPolicy(initial_delay=0.001, max_delay=0.005)
MESSAGES = [
    Message("system", "You are terse."),
    Message("user", "What is the capital of France?"),
]


@pytest_asyncio.fixture(params=["httpx", "httpx2"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Dispatch runs over plain httpx and over httpx2 (what ``make_async_client`` picks)."""
    c = httpx.AsyncClient() if request.param == "httpx" else make_async_client()
    async with c:
        yield c


async def collect(
    spec: ProviderSpec,
    client: httpx.AsyncClient,
    attempts: list[Attempt] | None = None,
    **params: object,
) -> list[StreamEvent]:
    return [
        event
        async for event in dispatch.stream(
            spec,
            "gpt-4o-mini",
            MESSAGES,
            dict(params),
            KEY,
            client=client,
            retry=FAST,
            on_attempt=None if attempts is None else attempts.append,
        )
    ]


@pytest.mark.asyncio
async def test_complete_and_stream_agree(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    attempts: list[Attempt] = []
    result = await dispatch.complete(
        OPENAI, "gpt-4o-mini", MESSAGES, {}, KEY, client=client, on_attempt=attempts.append
    )
    events = await collect(OPENAI, client, attempts)
    expected_in = tokens("You are terse.") + tokens("What is the capital of France?")
    assert result.text == "Echo: What is the capital of France?"
    assert "".join(e.delta for e in events) == result.text
    assert [e.done for e in events].count(True) == 1 and events[-1].done
    assert result.usage == events[-1].usage == Usage(input_tokens=expected_in, output_tokens=7)
    assert result.finish_reason == events[-1].finish_reason == "stop"
    assert isinstance(result, CallResult) and result.request_id.startswith("req_")
    assert isinstance(events[-1], FinalEvent) and events[-1].request_id.startswith("req_")
    assert result.response_id and result.response_id.startswith("chatcmpl-")
    assert [(a.number, a.status) for a in attempts] == [(1, "ok"), (1, "ok")]
    assert attempts[0].usage == result.usage and attempts[1].usage == result.usage
    assert attempts[1].ttft_s is not None and attempts[1].ttft_s <= attempts[1].latency_s
    sent = fake_providers.requests_for("openai")
    assert [r.path for r in sent] == ["/openai/v1/chat/completions"] * 2
    assert sent[0].headers["authorization"] == "Bearer " + KEY.reveal()
    assert sent[1].body["stream"] is True
    assert sent[1].body["stream_options"] == {"include_usage": True}
    assert fake_providers.errors == []


@pytest.mark.asyncio
async def test_cached_and_reasoning_usage(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.set_usage("openai", cached=4, reasoning=5, cache_write_5m=2)
    result = await dispatch.complete(OPENAI, "o4-mini", MESSAGES, {}, KEY, client=client)
    events = await collect(OPENAI, client)
    usage = Usage(
        input_tokens=9,  # cached tokens are part of prompt_tokens
        cached_input_tokens=4,
        cache_write_tokens=2,
        output_tokens=7 + 5,  # completion_tokens already include reasoning
        reasoning_tokens=5,
    )
    assert result.usage == usage
    assert events[-1].usage == usage


@pytest.mark.asyncio
async def test_params_are_mapped_and_unknown_ones_pass_through(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    params = {
        "temperature": 0.2,
        "max_tokens": 3,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": 7,
        "user": "notebook-1",
    }
    result = await dispatch.complete(OPENAI, "gpt-4o-mini", MESSAGES, params, KEY, client=client)
    body = fake_providers.requests[-1].body
    assert body["max_completion_tokens"] == 3 and "max_tokens" not in body
    assert (body["temperature"], body["top_p"], body["stop"], body["seed"]) == (0.2, 0.9, ["\n"], 7)
    assert body["user"] == "notebook-1"
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert result.text == "Echo: What is" and result.finish_reason == "length"
    assert result.usage.output_tokens == 3


@pytest.mark.asyncio
async def test_compatible_endpoint_without_key(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    spec = ProviderSpec("ollama", "openai", fake_providers.base_url("compat"), needs_key=False)
    result = await dispatch.complete(
        spec, "llama3.2", MESSAGES, {"max_tokens": 50}, None, client=client
    )
    events = [e async for e in dispatch.stream(spec, "llama3.2", MESSAGES, {}, None, client=client)]
    assert result.text == "".join(e.delta for e in events) == "Echo: What is the capital of France?"
    sent = fake_providers.requests_for("compat")
    assert "authorization" not in sent[0].headers
    assert sent[0].body["max_tokens"] == 50  # compatible servers get the classic name
    assert await dispatch.list_models(spec, None, client=client) == ["llama3.2", "qwen2.5"]


@pytest.mark.asyncio
async def test_refused_key_maps_to_authentication_error(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.set_keys("openai", "sk-the-right-one")
    attempts: list[Attempt] = []
    with pytest.raises(AuthenticationError) as info:
        await dispatch.complete(
            OPENAI, "gpt-4o-mini", MESSAGES, {}, KEY, client=client, on_attempt=attempts.append
        )
    err = info.value
    assert err.status_code == 401 and err.provider == "openai"
    assert err.request_id and err.request_id in str(err)
    assert "openai answered 401 invalid_api_key: Incorrect API key provided" in str(err)
    assert "jupyter byok keys set openai" in str(err)
    assert KEY.reveal() not in str(err) and KEY.reveal() not in repr(err)
    assert "\n" not in str(err)
    assert len(attempts) == 1 and attempts[0].http_status == 401 and not attempts[0].will_retry
    assert len(fake_providers.requests) == 1  # never retried


@pytest.mark.asyncio
async def test_unknown_model_and_quota(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    with pytest.raises(BadRequestError, match="model_not_found"):
        await dispatch.complete(OPENAI, "missing-model", MESSAGES, {}, KEY, client=client)
    fake_providers.add_fault("openai", "quota")
    with pytest.raises(QuotaExceededError, match="insufficient_quota"):
        await dispatch.complete(OPENAI, "gpt-4o-mini", MESSAGES, {}, KEY, client=client, retry=FAST)
    assert len(fake_providers.requests) == 2


@pytest.mark.parametrize("kind", ["drop_stream", "malformed_chunk", "stream_error"])
@pytest.mark.asyncio
async def test_broken_stream_raises_after_reporting(
    fake_providers: FakeProviders, client: httpx.AsyncClient, kind: str
) -> None:
    fake_providers.add_fault("openai", kind, after=3)
    attempts: list[Attempt] = []
    deltas: list[str] = []
    with pytest.raises(StreamError) as info:
        async for event in dispatch.stream(
            OPENAI, "gpt-4o-mini", MESSAGES, {}, KEY, client=client,
            retry=FAST, on_attempt=attempts.append,
        ):  # fmt: skip
            deltas.append(event.delta)
    assert deltas == ["Echo:", " What"]  # frame 0 is the role chunk
    assert len(fake_providers.requests) == 1  # no retry once bytes have arrived
    assert [a.status for a in attempts] == ["error"]
    assert attempts[0].error_type == "StreamError" and attempts[0].http_status == 200
    assert info.value.request_id == attempts[0].request_id  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_stream_retries_before_first_byte(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.add_fault("openai", "server_error")
    fake_providers.add_fault("openai", "drop_connection")
    attempts: list[Attempt] = []
    events = await collect(OPENAI, client, attempts)
    assert events[-1].done and len(fake_providers.requests) == 3
    assert [(a.number, a.status, a.will_retry) for a in attempts] == [
        (1, "error", True),
        (2, "error", True),
        (3, "ok", False),
    ]
    assert attempts[0].http_status == 500 and attempts[1].http_status is None


@pytest.mark.asyncio
async def test_closing_a_stream_early_reports_cancelled(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    attempts: list[Attempt] = []
    gen = dispatch.stream(
        OPENAI, "gpt-4o-mini", MESSAGES, {}, KEY, client=client, on_attempt=attempts.append
    )
    async with contextlib.aclosing(gen):
        async for event in gen:
            assert event.delta == "Echo:"
            break
    assert [a.status for a in attempts] == ["cancelled"]


@pytest.mark.asyncio
async def test_cancelling_a_call_reports_cancelled(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.set_latency("openai", 2.0)
    attempts: list[Attempt] = []
    task = asyncio.create_task(
        dispatch.complete(
            OPENAI, "gpt-4o-mini", MESSAGES, {}, KEY, client=client, on_attempt=attempts.append
        )
    )
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [a.status for a in attempts] == ["cancelled"]


@pytest.mark.asyncio
async def test_models_and_key_check(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    assert await dispatch.list_models(OPENAI, KEY, client=client) == [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-5-mini",
    ]
    ok = await dispatch.check_key(OPENAI, KEY, client=client)
    assert ok["ok"] is True and ok["status"] == 200 and ok["models"] == 3
    assert ok["latency_s"] >= 0 and "3 models" in ok["detail"]
    fake_providers.set_keys("openai", "sk-other")
    bad = await dispatch.check_key(OPENAI, KEY, client=client)
    assert bad["ok"] is False and bad["status"] == 401
    assert bad["error_type"] == "AuthenticationError"
    with pytest.raises(AuthenticationError):
        await dispatch.check_key(OPENAI, KEY, client=client, raise_errors=True)
    assert fake_providers.requests[-1].path == "/openai/v1/models"


@pytest.mark.asyncio
async def test_unreachable_provider_is_a_connection_error(client: httpx.AsyncClient) -> None:
    with socket_closed_port() as port:
        spec = ProviderSpec("openai", "openai", f"http://127.0.0.1:{port}/v1")
        attempts: list[Attempt] = []
        with pytest.raises(ProviderConnectionError, match="could not reach openai"):
            await dispatch.complete(
                spec, "m", MESSAGES, {}, KEY, client=client, retry=FAST,
                on_attempt=attempts.append,
            )  # fmt: skip
    assert [a.will_retry for a in attempts] == [True, True, False]


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connections are refused
    yield port


def test_verify_key_from_environment_and_keystore(
    fake_providers: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY.reveal())
    message = verify_key("openai")
    assert message.startswith("openai key (environment, ending 0001) works: 3 models available")
    assert KEY.reveal() not in message
    store = Keystore()
    store.set("openai", "sk-proj-stored0key000000000000000000002", name="work")
    assert "keystore" in verify_key("openai", "work")
    entry = next(e for e in store.list() if e.name == "work")
    assert entry.last_verified
    fake_providers.set_keys("openai", "sk-only-this-one")
    with pytest.raises(AuthenticationError, match="401"):
        verify_key("openai", "work")
    assert fake_providers.requests[-1].headers["authorization"].endswith("0002")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "cls", "match"),
    [
        (b'{"error": {"message": "upstream exploded"}}', StreamError, "upstream exploded"),
        (b"<html>gateway</html>", ProviderError, "could not be read"),
    ],
)
async def test_a_200_that_is_not_an_answer_is_reported_once(
    body: bytes, cls: type[ProviderError], match: str
) -> None:
    """Gateways sometimes answer 200 with an error or HTML: one attempt, one clear error."""

    def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"x-request-id": "req_gw"})

    attempts: list[Attempt] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(gateway)) as c:
        with pytest.raises(cls, match=match) as info:
            await dispatch.complete(
                OPENAI, "gpt-4o-mini", MESSAGES, {}, KEY, client=c, on_attempt=attempts.append
            )
    assert info.value.request_id == "req_gw" and info.value.status_code == 200
    assert [(a.status, a.http_status) for a in attempts] == [("error", 200)]
