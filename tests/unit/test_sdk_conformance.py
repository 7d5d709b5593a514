"""The official SDKs parse the fake's answers (keeping the fake honest), and a canary key
never leaks into logs, exception messages or reprs.

Test-only dependencies: ``openai``, ``anthropic`` and ``google-genai``. Each SDK is pointed
at the fake through its own base-URL option, exactly as a user would point it elsewhere.
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
import pytest_asyncio
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from jupyter_byok.errors import ByokError
from jupyter_byok.providers import BUILTIN, dispatch
from jupyter_byok.providers.base import RetryPolicy
from jupyter_byok.redact import Secret, install_log_filter
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Attempt, Message, Usage

pytest_plugins = ["jupyter_byok.testing.pytest_plugin"]

FAST = RetryPolicy(initial_delay=0.001, max_delay=0.005)
PROMPT = "Tell me about the sea"
MESSAGES = [Message("user", PROMPT)]


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


async def ours(provider: str, client: httpx.AsyncClient, model: str) -> tuple[Usage, Usage, str]:
    spec = BUILTIN[provider]
    key = Secret("test-key-for-" + provider + "-000000")
    result = await dispatch.complete(spec, model, MESSAGES, {}, key, client=client)
    events = [e async for e in dispatch.stream(spec, model, MESSAGES, {}, key, client=client)]
    return result.usage, events[-1].usage or Usage(), result.text


@pytest.mark.asyncio
async def test_openai_sdk_reads_the_same_usage(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.set_usage("openai", cached=2, reasoning=3)
    sdk = openai.OpenAI(api_key="sk-sdk", base_url=fake_providers.base_url("openai"))
    reply = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
    )
    chunks = list(
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage, streamed_usage, text = await ours("openai", client, "gpt-4o-mini")
    assert reply.choices[0].message.content == streamed_text == text
    assert reply._request_id and reply._request_id.startswith("req_")
    for u in (reply.usage, chunks[-1].usage):
        assert u is not None and u.prompt_tokens_details and u.completion_tokens_details
        assert u.prompt_tokens == usage.input_tokens == streamed_usage.input_tokens == 5
        assert u.prompt_tokens_details.cached_tokens == usage.cached_input_tokens == 2
        assert u.completion_tokens == usage.output_tokens == streamed_usage.output_tokens
        assert u.completion_tokens_details.reasoning_tokens == usage.reasoning_tokens == 3
    assert reply.choices[0].finish_reason == "stop"


def test_openai_sdk_errors_and_retries(fake_providers: FakeProviders) -> None:
    sdk = openai.OpenAI(api_key="sk-sdk", base_url=fake_providers.base_url("openai"))
    fake_providers.add_fault("openai", "rate_limit", retry_after_ms=5)
    ok = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])
    assert ok.choices[0].message.content == "Echo: a"
    assert [r.headers["x-stainless-retry-count"] for r in fake_providers.requests] == ["0", "1"]
    fake_providers.add_fault("openai", "quota")
    with pytest.raises(openai.RateLimitError) as info:
        sdk.with_options(max_retries=0).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "a"}]
        )
    assert info.value.code == "insufficient_quota"
    fake_providers.set_keys("openai", "sk-other")
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()
    fake_providers.set_keys("openai")
    assert [m.id for m in sdk.models.list()] == ["gpt-4o-mini", "gpt-4o", "gpt-5-mini"]


@pytest.mark.asyncio
async def test_anthropic_sdk_reads_the_same_usage(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.set_usage("anthropic", cached=1, cache_write_5m=2, cache_write_1h=1, reasoning=4)
    sdk = anthropic.Anthropic(api_key="sk-ant-sdk", base_url=fake_providers.base_url("anthropic"))
    reply = sdk.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": PROMPT}]
    )
    with sdk.messages.stream(
        model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": PROMPT}]
    ) as stream:
        streamed_text = "".join(stream.text_stream)
        final = stream.get_final_message()
    usage, streamed_usage, text = await ours("anthropic", client, "claude-sonnet-4-6")
    text_blocks = [b.text for b in reply.content if b.type == "text"]
    assert text_blocks == [streamed_text] == [text]
    assert [b.type for b in reply.content] == ["thinking", "text"]
    for u in (reply.usage, final.usage):
        total_in = u.input_tokens + (u.cache_read_input_tokens or 0)
        total_in += u.cache_creation_input_tokens or 0
        assert total_in == usage.input_tokens == streamed_usage.input_tokens == 5
        assert u.cache_read_input_tokens == usage.cached_input_tokens == 1
        assert u.cache_creation is not None
        assert u.cache_creation.ephemeral_5m_input_tokens == usage.cache_write_tokens == 2
        assert u.cache_creation.ephemeral_1h_input_tokens == usage.cache_write_1h_tokens == 1
        assert u.output_tokens == usage.output_tokens == streamed_usage.output_tokens == 6 + 4
    # the SDK sends the other documented header style; the fake takes both
    sent = fake_providers.requests_for("anthropic")[0].headers
    assert sent["authorization"] == "Bearer sk-ant-sdk" and "x-api-key" not in sent


def test_anthropic_sdk_errors(fake_providers: FakeProviders) -> None:
    sdk = anthropic.Anthropic(
        api_key="sk-ant-sdk", base_url=fake_providers.base_url("anthropic"), max_retries=0
    )
    args: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "a"}],
    }
    fake_providers.add_fault("anthropic", "overloaded")
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        sdk.messages.create(**args)
    assert overloaded.value.status_code == 529
    assert overloaded.value.request_id and overloaded.value.request_id.startswith("req_")
    fake_providers.add_fault("anthropic", "rate_limit")
    with pytest.raises(anthropic.RateLimitError):
        sdk.messages.create(**args)
    fake_providers.set_keys("anthropic", "sk-ant-other")
    with pytest.raises(anthropic.AuthenticationError):
        sdk.messages.create(**args)
    fake_providers.set_keys("anthropic")
    fake_providers.add_fault("anthropic", "stream_error", after=4)
    with (
        pytest.raises(anthropic.APIStatusError, match="Overloaded"),
        sdk.messages.stream(**args) as stream,
    ):
        "".join(stream.text_stream)
    assert [m.id for m in sdk.models.list()] == [
        "claude-sonnet-4-6",
        "claude-haiku-4-5",
        "claude-opus-4-7",
    ]


@pytest.mark.asyncio
async def test_google_genai_sdk_reads_the_same_usage(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.set_usage("gemini", cached=2, reasoning=5)
    sdk = genai.Client(
        api_key="AIza-sdk",
        http_options=genai_types.HttpOptions(base_url=fake_providers.base_url("gemini")),
    )
    reply = sdk.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    chunks = list(sdk.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT))
    usage, streamed_usage, text = await ours("gemini", client, "gemini-2.5-flash")
    assert reply.text == "".join(c.text or "" for c in chunks) == text
    for meta in (reply.usage_metadata, chunks[-1].usage_metadata):
        assert meta is not None
        assert meta.prompt_token_count == usage.input_tokens == streamed_usage.input_tokens == 5
        assert meta.cached_content_token_count == usage.cached_input_tokens == 2
        assert meta.thoughts_token_count == usage.reasoning_tokens == 5
        out = (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)
        assert out == usage.output_tokens == streamed_usage.output_tokens
        assert meta.total_token_count == usage.total_tokens
    for sent in fake_providers.requests_for("gemini")[:2]:
        assert sent.headers["x-goog-api-key"] == "AIza-sdk" and "key" not in sent.query
    fake_providers.set_keys("gemini", "AIza-other")
    with pytest.raises(genai_errors.ClientError) as info:
        sdk.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"


CANARIES = {
    "openai": "sk-proj-" + "Canary0" * 10,
    "anthropic": "sk-ant-api03-" + "Canary1" * 13,
    "gemini": "AIzaSy" + "Canary2Canary2Canary2Canary2Canar",
    "xai": "xai-" + "Canary3" * 12,
    "tavily": "tvly-dev-" + "Canary4" * 5,
}


@pytest.mark.asyncio
async def test_canary_keys_never_leak(
    fake_providers: FakeProviders, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "jupyter_byok"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    install_log_filter()
    seen: list[str] = []
    attempts: list[Attempt] = []
    try:
        for provider, raw in CANARIES.items():
            spec, key = BUILTIN[provider], Secret(raw)
            common: dict[str, Any] = {
                "client": client,
                "retry": FAST,
                "on_attempt": attempts.append,
            }
            if provider == "tavily":
                result: object = await dispatch.search(spec, "q", {}, key, **common)
            else:
                result = await dispatch.complete(spec, "m", MESSAGES, {}, key, **common)
                seen.append(
                    repr([e async for e in dispatch.stream(spec, "m", MESSAGES, {}, key, **common)])
                )
            seen += [repr(result), str(result), repr(key), str(key), f"{key}"]
            seen.append(repr(await dispatch.check_key(spec, key, client=client)))
            # every refusal path: refused key, mid-stream error, failing server
            fake_providers.set_keys(provider, "another-key")
            for call in range(2):
                try:
                    if provider == "tavily":
                        await dispatch.search(spec, "q", {}, key, **common)
                    elif call == 0:
                        await dispatch.complete(spec, "m", MESSAGES, {}, key, **common)
                    else:
                        async for _ in dispatch.stream(spec, "m", MESSAGES, {}, key, **common):
                            pass
                except ByokError as exc:
                    seen += [str(exc), repr(exc), repr(exc.args)]
                    logging.getLogger("jupyter_byok").exception("call failed with %s", raw)
            fake_providers.set_keys(provider)
            with pytest.raises(ByokError) as info:
                await _fail(spec, key, client, fake_providers)
            seen += [str(info.value), repr(info.value)]
    finally:
        root.removeHandler(handler)
    seen += [repr(a) for a in attempts]
    logged = buffer.getvalue() + caplog.text
    assert "HTTP Request: POST" in logged  # httpx did log, at DEBUG/INFO, through the filter
    assert "[redacted]" in logged  # and our own record with the key was masked
    blob = "\n".join([*seen, logged])
    for provider, raw in CANARIES.items():
        assert raw not in blob, provider
    urls = [r.path + str(r.query) for r in fake_providers.requests]
    assert not any(raw in u for u in urls for raw in CANARIES.values())
    assert fake_providers.errors == []


async def _fail(spec: Any, key: Secret, client: httpx.AsyncClient, fake: FakeProviders) -> None:
    fake.add_fault(spec.name, "server_error", times=5)
    if spec.name == "tavily":
        await dispatch.search(spec, "q", {}, key, client=client, retry=FAST)
    else:
        await dispatch.complete(spec, "m", MESSAGES, {}, key, client=client, retry=FAST)
