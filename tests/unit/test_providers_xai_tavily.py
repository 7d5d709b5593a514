"""xAI (OpenAI wire, own cost and error shape) and Tavily search against the loopback fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio

from jupyter_byok.errors import (
    AuthenticationError,
    ConfigError,
    QuotaExceededError,
    RateLimitError,
)
from jupyter_byok.providers import BUILTIN, dispatch
from jupyter_byok.providers.base import RetryPolicy
from jupyter_byok.redact import Secret
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Attempt, Message, Usage

pytest_plugins = ["jupyter_byok.testing.pytest_plugin"]

XAI, TAVILY = BUILTIN["xai"], BUILTIN["tavily"]
XKEY = Secret("xai-" + "t" * 80)
TKEY = Secret("tvly-dev-test0tavily0key0000000001")
FAST = RetryPolicy(initial_delay=0.001, max_delay=0.005)
MESSAGES = [Message("user", "Tell me a joke")]


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.asyncio
async def test_xai_usage_cost_and_reasoning(
    fake_providers: FakeProviders, client: httpx.AsyncClient, fold: bool
) -> None:
    fake_providers.set_usage("xai", reasoning=10, cached=1, fold_reasoning=fold, ticks_per_token=7)
    result = await dispatch.complete(XAI, "grok-4.3", MESSAGES, {}, XKEY, client=client)
    events = [e async for e in dispatch.stream(XAI, "grok-4.3", MESSAGES, {}, XKEY, client=client)]
    # Either reading of xAI's docs ends in the same normalised usage.
    expected = Usage(
        input_tokens=4,
        cached_input_tokens=1,
        output_tokens=5 + 10,
        reasoning_tokens=10,
        provider_cost_usd=Decimal((4 + 5 + 10) * 7) / Decimal(10**10),
    )
    assert result.usage == expected == events[-1].usage
    assert result.text == "".join(e.delta for e in events) == "Echo: Tell me a joke"
    sent = fake_providers.requests_for("xai")
    assert sent[0].path == "/xai/v1/chat/completions"
    assert sent[0].headers["authorization"] == "Bearer " + XKEY.reveal()
    assert sent[0].body.get("max_tokens") is None


@pytest.mark.asyncio
async def test_xai_bad_key_is_a_400_with_its_own_shape(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.set_keys("xai", "xai-other")
    with pytest.raises(AuthenticationError) as info:
        await dispatch.complete(XAI, "grok-4.3", MESSAGES, {}, XKEY, client=client, retry=FAST)
    text = str(info.value)
    assert "xai answered 400 Client specified an invalid argument: Incorrect API key" in text
    assert XKEY.reveal() not in text and len(fake_providers.requests) == 1
    fake_providers.set_keys("xai")
    fake_providers.add_fault("xai", "quota")
    with pytest.raises(QuotaExceededError):
        await dispatch.complete(XAI, "grok-4.3", MESSAGES, {}, XKEY, client=client, retry=FAST)
    assert await dispatch.list_models(XAI, XKEY, client=client) == ["grok-4.3", "grok-code-fast-1"]


@pytest.mark.parametrize(("depth", "credits"), [("basic", 1.0), ("advanced", 2.0)])
@pytest.mark.asyncio
async def test_tavily_search(
    fake_providers: FakeProviders, client: httpx.AsyncClient, depth: str, credits: float
) -> None:
    attempts: list[Attempt] = []
    result = await dispatch.search(
        TAVILY, "jupyter byok", {"depth": depth, "max_results": 3}, TKEY,
        client=client, on_attempt=attempts.append,
    )  # fmt: skip
    assert result.usage.search_credits == credits
    assert [r["title"] for r in result.results] == [
        "Result 1 for jupyter byok",
        "Result 2 for jupyter byok",
        "Result 3 for jupyter byok",
    ]
    assert result.results[0]["url"] == "https://example.com/jupyter-byok/1"
    assert result.results[0]["score"] == 0.99 and result.answer is None
    assert result.request_id and result.request_id == result.response_id
    assert [a.status for a in attempts] == ["ok"] and attempts[0].usage == result.usage
    sent = fake_providers.requests[-1]
    assert sent.path == "/tavily/search"
    assert sent.headers["authorization"] == "Bearer " + TKEY.reveal()
    assert "api_key" not in sent.body
    assert sent.body == {
        "query": "jupyter byok",
        "search_depth": depth,
        "include_usage": True,
        "max_results": 3,
    }


@pytest.mark.asyncio
async def test_tavily_errors_and_key_check(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.set_keys("tavily", "tvly-other")
    with pytest.raises(AuthenticationError, match="401: Unauthorized"):
        await dispatch.search(TAVILY, "q", {}, TKEY, client=client, retry=FAST)
    bad = await dispatch.check_key(TAVILY, TKEY, client=client)
    assert bad["ok"] is False and bad["status"] == 401
    fake_providers.set_keys("tavily")
    fake_providers.add_fault("tavily", "quota")
    with pytest.raises(QuotaExceededError, match="432"):
        await dispatch.search(TAVILY, "q", {}, TKEY, client=client, retry=FAST)
    fake_providers.add_fault("tavily", "rate_limit", times=5)
    with pytest.raises(RateLimitError):
        await dispatch.search(TAVILY, "q", {}, TKEY, client=client, retry=FAST)
    assert len(fake_providers.requests) == 2 + 1 + 3
    fake_providers.reset()
    ok = await dispatch.check_key(TAVILY, TKEY, client=client)
    assert ok == {
        "ok": True,
        "status": 200,
        "latency_s": ok["latency_s"],
        "detail": "12 of 1000 credits used",
        "request_id": "",
        "models": None,
    }
    assert fake_providers.requests[-1].path == "/tavily/usage"
    with pytest.raises(ConfigError):
        await dispatch.complete(TAVILY, "x", MESSAGES, {}, TKEY, client=client)
