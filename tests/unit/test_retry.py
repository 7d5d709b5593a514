"""Retry policy: header table (like the SDKs' tests), exact call counts, and a fault matrix."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import AsyncIterator
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio

from jupyter_byok.errors import (
    AuthenticationError,
    BadRequestError,
    ProviderError,
    ProviderServerError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
)
from jupyter_byok.providers import BUILTIN, ProviderSpec, dispatch
from jupyter_byok.providers.base import (
    RetryPolicy,
    is_retryable,
    make_async_client,
    retry_after_seconds,
)
from jupyter_byok.redact import Secret
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Attempt, Message

pytest_plugins = ["jupyter_byok.testing.pytest_plugin"]

FAST = RetryPolicy(initial_delay=0.001, max_delay=0.005)
KEY = Secret("test-key-0000000000000000000001")
MESSAGES = [Message("user", "ping pong")]
NOW = dt.datetime(2026, 11, 27, 12, 0, 0, tzinfo=dt.timezone.utc)


def http_date(seconds: float) -> str:
    return format_datetime(NOW + dt.timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "0"}, None),  # not positive: fall back to backoff
        ({"retry-after": "-2"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # -ms wins
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({"retry-after-ms": "0", "retry-after": "9"}, 9.0),
        ({"retry-after": http_date(20)}, 20.0),
        ({"retry-after": http_date(-5)}, None),  # in the past
        ({"retry-after": "Fri, 27 Nov 2026 12:01:00"}, 60.0),  # no zone: GMT
    ],
)
def test_retry_after_header_table(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers, now=NOW) == expected


@pytest.mark.parametrize(
    ("headers", "cap", "retried"),
    [
        ({"retry-after": "60"}, 60.0, True),
        ({"retry-after": "61"}, 60.0, False),
        ({"retry-after-ms": "60000"}, 60.0, True),
        ({"retry-after-ms": "60001"}, 60.0, False),
        ({"retry-after": "120"}, 120.0, True),
        ({"retry-after": "121"}, 120.0, False),
        ({"retry-after": http_date(59)}, 60.0, True),
        ({"retry-after": http_date(61)}, 60.0, False),
    ],
)
def test_retry_after_cap(headers: dict[str, str], cap: float, retried: bool) -> None:
    policy = RetryPolicy(max_retry_after=cap)
    error = RateLimitError("x", provider="openai", status_code=429)
    delay = policy.delay(0, error, headers, now=NOW)
    assert (delay is not None) is retried
    if not retried:
        assert error.retry_after is not None and error.retry_after > cap


@pytest.mark.parametrize(
    ("status", "cls", "headers", "retryable"),
    [
        (400, BadRequestError, {}, False),
        (401, AuthenticationError, {}, False),
        (403, AuthenticationError, {}, False),
        (404, BadRequestError, {}, False),
        (400, BadRequestError, {"x-should-retry": "true"}, False),  # never, whatever it says
        (401, AuthenticationError, {"x-should-retry": "true"}, False),
        (429, QuotaExceededError, {"x-should-retry": "true"}, False),
        (402, QuotaExceededError, {}, False),
        (408, ProviderServerError, {}, True),
        (409, ProviderServerError, {}, True),
        (429, RateLimitError, {}, True),
        (500, ProviderServerError, {}, True),
        (503, ProviderServerError, {}, True),
        (529, ProviderServerError, {}, True),
        (500, ProviderServerError, {"x-should-retry": "false"}, False),
        (422, BadRequestError, {"x-should-retry": "true"}, True),
        (422, BadRequestError, {}, False),
    ],
)
def test_what_is_retryable(
    status: int, cls: type[ProviderError], headers: dict[str, str], retryable: bool
) -> None:
    assert is_retryable(cls("x", provider="p", status_code=status), headers) is retryable


@pytest.mark.parametrize("n", range(6))
def test_backoff_bounds(n: int) -> None:
    rng = random.Random(n)
    cap = min(0.5 * 2**n, 8.0)
    full = RetryPolicy()
    sdk = RetryPolicy(jitter="sdk")
    for _ in range(200):
        assert 0 <= full.backoff(n, rng) <= cap
        assert 0.75 * cap <= sdk.backoff(n, rng) <= cap


@pytest_asyncio.fixture(params=["httpx", "httpx2"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Dispatch runs over plain httpx and over httpx2 (what ``make_async_client`` picks)."""
    c = httpx.AsyncClient() if request.param == "httpx" else make_async_client()
    async with c:
        yield c


async def call(
    spec: ProviderSpec,
    client: httpx.AsyncClient,
    retry: RetryPolicy = FAST,
    attempts: list[Attempt] | None = None,
    timeout: float | None = None,
) -> object:
    if spec.wire == "tavily":
        return await dispatch.search(
            spec, "ping", {}, KEY, client=client, retry=retry, timeout=timeout,
            on_attempt=None if attempts is None else attempts.append,
        )  # fmt: skip
    return await dispatch.complete(
        spec, "model-1", MESSAGES, {}, KEY, client=client, retry=retry, timeout=timeout,
        on_attempt=None if attempts is None else attempts.append,
    )  # fmt: skip


@pytest.mark.parametrize(("max_retries", "calls"), [(0, 1), (1, 2), (2, 3), (4, 5)])
@pytest.mark.asyncio
async def test_exact_call_counts_on_persistent_500(
    fake_providers: FakeProviders, client: httpx.AsyncClient, max_retries: int, calls: int
) -> None:
    fake_providers.add_fault("openai", "server_error", times=10)
    attempts: list[Attempt] = []
    policy = RetryPolicy(max_retries=max_retries, initial_delay=0.001, max_delay=0.002)
    with pytest.raises(ProviderServerError):
        await call(BUILTIN["openai"], client, policy, attempts)
    assert len(fake_providers.requests) == calls
    assert [a.number for a in attempts] == list(range(1, calls + 1))
    assert [a.will_retry for a in attempts] == [True] * (calls - 1) + [False]


@pytest.mark.asyncio
async def test_default_policy_is_two_retries(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    assert RetryPolicy().max_retries == 2
    fake_providers.add_fault("openai", "rate_limit", times=5, retry_after_ms=1)
    with pytest.raises(RateLimitError):
        await call(BUILTIN["openai"], client, RetryPolicy())
    assert len(fake_providers.requests) == 3


@pytest.mark.parametrize(
    ("opts", "low", "high"),
    [
        ({"retry_after": "0.3"}, 0.3, 1.0),
        ({"retry_after_ms": "150"}, 0.15, 1.0),
        ({"retry_after_ms": "200", "retry_after": "30"}, 0.2, 1.0),
    ],
)
@pytest.mark.asyncio
async def test_retry_after_is_honoured(
    fake_providers: FakeProviders,
    client: httpx.AsyncClient,
    opts: dict[str, Any],
    low: float,
    high: float,
) -> None:
    fake_providers.add_fault("anthropic", "rate_limit", **opts)
    start = time.perf_counter()
    # without the header the backoff would wait 3.75-5 s: far outside the window
    await call(BUILTIN["anthropic"], client, RetryPolicy(initial_delay=5.0, jitter="sdk"))
    elapsed = time.perf_counter() - start
    assert low <= elapsed < high
    first, second = fake_providers.requests
    assert low <= second.time - first.time < high


@pytest.mark.asyncio
async def test_retry_after_beyond_the_cap_surfaces_the_error(
    fake_providers: FakeProviders, client: httpx.AsyncClient
) -> None:
    fake_providers.add_fault("openai", "rate_limit", retry_after="5")
    with pytest.raises(RateLimitError) as info:
        await call(BUILTIN["openai"], client, RetryPolicy(max_retry_after=1.0))
    assert info.value.retry_after == 5.0
    assert len(fake_providers.requests) == 1


@pytest.mark.parametrize(
    ("kind", "opts", "calls"),
    [
        ("server_error", {"should_retry": False}, 1),
        ("bad_request", {"status": 422, "should_retry": True}, 2),
        ("bad_request", {"should_retry": True}, 1),
        ("auth", {"should_retry": True}, 1),
        ("quota", {"should_retry": True}, 1),
    ],
)
@pytest.mark.asyncio
async def test_x_should_retry(
    fake_providers: FakeProviders,
    client: httpx.AsyncClient,
    kind: str,
    opts: dict[str, Any],
    calls: int,
) -> None:
    fake_providers.add_fault("openai", kind, **opts)
    try:
        await call(BUILTIN["openai"], client)
    except ProviderError:
        pass
    assert len(fake_providers.requests) == calls


RETRIED = (
    "rate_limit",
    "server_error",
    "unavailable",
    "overloaded",
    "timeout_status",
    "conflict",
    "drop_connection",
)
REFUSED: dict[str, type[ProviderError]] = {
    "quota": QuotaExceededError,
    "auth": AuthenticationError,
    "permission": AuthenticationError,
    "not_found": BadRequestError,
    "bad_request": BadRequestError,
}
PROVIDERS = ("openai", "xai", "anthropic", "gemini", "tavily")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.asyncio
async def test_fault_matrix(
    fake_providers: FakeProviders, client: httpx.AsyncClient, provider: str
) -> None:
    spec = BUILTIN[provider]
    for kind in RETRIED:
        fake_providers.reset()
        fake_providers.add_fault(provider, kind, retry_after_ms=1)
        attempts: list[Attempt] = []
        await call(spec, client, attempts=attempts)
        assert len(fake_providers.requests) == 2, (provider, kind)
        assert [a.status for a in attempts] == ["error", "ok"], (provider, kind)
    for kind, cls in REFUSED.items():
        fake_providers.reset()
        fake_providers.add_fault(provider, kind)
        attempts = []
        with pytest.raises(cls) as info:
            await call(spec, client, attempts=attempts)
        assert len(fake_providers.requests) == 1, (provider, kind)
        assert len(attempts) == 1 and attempts[0].http_status == info.value.status_code
        assert info.value.provider == provider and str(info.value).startswith(provider)
    # a slow first byte beyond the call's deadline: one timeout attempt, and no retry, as
    # the deadline (timeout=) covers the whole call, retries included
    fake_providers.reset()
    fake_providers.add_fault(provider, "slow_first_byte", delay=1.0)
    attempts = []
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError):
        await call(spec, client, attempts=attempts, timeout=0.3)
    assert time.monotonic() - started < 0.9
    assert [a.status for a in attempts] == ["timeout"]
    assert attempts[0].error_type == "ProviderTimeoutError"
    # a server error answered at once is still retried within the deadline
    fake_providers.reset()
    fake_providers.add_fault(provider, "server_error", retry_after_ms=1)
    attempts = []
    await call(spec, client, attempts=attempts, timeout=5)
    assert [a.status for a in attempts] == ["error", "ok"]
    assert fake_providers.errors == []
