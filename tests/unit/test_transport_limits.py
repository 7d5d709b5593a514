"""Caps, timeouts and the no-retry rule of a provider call, against abusive loopback fakes.

Each test reproduces an item of issue 15 (sections 4, 5, 6 and the Gemini model path) with
short injected limits, so the whole file runs in seconds. Both client stacks are covered:
plain httpx and what ``make_async_client`` picks (httpx over aiohttp, or httpx2).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import pytest_asyncio

import jupyter_byok
from jupyter_byok.engine import Engine
from jupyter_byok.errors import (
    ModelIdError,
    ProviderError,
    ProviderTimeoutError,
    ResponseTooLargeError,
    StreamError,
)
from jupyter_byok.keys import Keystore
from jupyter_byok.providers import BUILTIN, dispatch
from jupyter_byok.providers.base import Limits, RetryPolicy, make_async_client
from jupyter_byok.redact import Secret
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Attempt, Message, Request

KEY = Secret("test-key-0000000000000000000001")
MESSAGES = [Message("user", "ping pong")]
FAST = RetryPolicy(initial_delay=0.001, max_delay=0.005)
MIB = 1024 * 1024
CHAT = ("openai", "anthropic", "gemini")


@pytest_asyncio.fixture(params=["httpx", "default"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    c = httpx.AsyncClient() if request.param == "httpx" else make_async_client()
    async with c:
        yield c


async def complete(
    client: Any, provider: str = "openai", *, limits: Limits | None = None, **kw: Any
) -> tuple[Any, list[Attempt]]:
    attempts: list[Attempt] = []
    params = kw.pop("params", {})
    result = await dispatch.complete(
        BUILTIN[provider], kw.pop("model", "model-1"), MESSAGES, params, KEY, client=client,
        retry=kw.pop("retry", FAST), on_attempt=attempts.append, limits=limits, **kw,
    )  # fmt: skip
    return result, attempts


async def stream(
    client: Any, provider: str = "openai", *, limits: Limits | None = None, **kw: Any
) -> tuple[str, list[Attempt]]:
    attempts: list[Attempt] = []
    text = []
    async for event in dispatch.stream(
        BUILTIN[provider], "model-1", MESSAGES, {}, KEY, client=client, retry=FAST,
        on_attempt=attempts.append, limits=limits, **kw,
    ):  # fmt: skip
        text.append(event.delta or "")
    return "".join(text), attempts


class Ticker:
    """The most CPU the event loop's thread spent between two runs of a 5 ms ticker: how
    long the loop was held (CPU time, not wall time, which on a loaded machine, or with the
    fake's thread holding the GIL, also counts waiting for a core)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.thread_time()
        while True:
            await asyncio.sleep(0.005)
            now = time.thread_time()
            self.worst = max(self.worst, now - last)
            last = now

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


# -- section 4: size caps ------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("declare", [True, False])
async def test_a_huge_answer_is_refused_at_the_cap_and_not_retried(
    fake_providers: FakeProviders, client: Any, declare: bool
) -> None:
    """A 200 MB answer (with or without Content-Length) stops at the cap: one error attempt."""
    fake_providers.add_fault("openai", "huge_body", size=200 * MIB, declare=declare)
    started = time.monotonic()
    with pytest.raises(ResponseTooLargeError, match="more than 2,097,152 bytes") as info:
        await complete(client, limits=Limits(max_response_bytes=2 * MIB))
    assert time.monotonic() - started < 5
    assert "JUPYTER_BYOK_MAX_RESPONSE_BYTES" in str(info.value) and "\n" not in str(info.value)
    assert len(fake_providers.requests) == 1  # never retried


@pytest.mark.asyncio
async def test_a_large_answer_is_parsed_off_the_event_loop(
    fake_providers: FakeProviders, client: Any
) -> None:
    """A 20 MB answer made of millions of tiny JSON values (seconds to parse) leaves the loop
    free: parsed in a worker process, and the answer still comes back whole."""
    fake_providers.add_fault("openai", "huge_body", size=20 * MIB, shape="nested")
    async with Ticker() as ticker:
        result, attempts = await complete(client, limits=Limits(max_response_bytes=32 * MIB))
    assert result.text == "tiny answer"
    assert [a.status for a in attempts] == ["ok"]
    assert ticker.worst < 0.2, f"the loop was busy for {ticker.worst:.3f} s in one turn"


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", CHAT)
async def test_an_endless_stream_stops_at_the_cap(
    fake_providers: FakeProviders, client: Any, provider: str
) -> None:
    fake_providers.add_fault(provider, "endless_stream")
    with pytest.raises(ResponseTooLargeError, match="in the stream"):
        await stream(client, provider, limits=Limits(max_response_bytes=3 * MIB))
    assert len(fake_providers.requests) == 1


@pytest.mark.asyncio
async def test_an_endless_stream_reports_its_attempt_as_an_error(
    fake_providers: FakeProviders, client: Any
) -> None:
    fake_providers.add_fault("openai", "endless_stream")
    attempts: list[Attempt] = []
    with pytest.raises(ResponseTooLargeError):
        async for _ in dispatch.stream(
            BUILTIN["openai"], "m", MESSAGES, {}, KEY, client=client,
            on_attempt=attempts.append, limits=Limits(max_response_bytes=MIB),
        ):  # fmt: skip
            pass
    [attempt] = attempts
    assert attempt.status == "error" and attempt.error_type == "ResponseTooLargeError"
    assert attempt.http_status == 200


# -- section 5: timeouts ---------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["hang", "slow_headers"])
async def test_a_hung_provider_is_held_only_until_the_deadline(
    fake_providers: FakeProviders, client: Any, kind: str
) -> None:
    """A provider that never answers, or sends its headers a byte at a time, costs one
    attempt of at most the deadline (retries count against it), not 3 x 600 s."""
    fake_providers.add_fault("openai", kind, times=5, interval=0.1)
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError, match=r"deadline of 0\.8 s"):
        await complete(client, timeout=0.8)
    elapsed = time.monotonic() - started
    assert 0.7 < elapsed < 2.0, elapsed
    assert len(fake_providers.requests) == 1


@pytest.mark.asyncio
async def test_timeout_in_params_is_the_deadline_and_is_not_sent(
    fake_providers: FakeProviders, client: Any
) -> None:
    result, _ = await complete(client, params={"timeout": 30, "temperature": 0})
    assert result.text.startswith("Echo:")
    body = fake_providers.requests[-1].body
    assert "timeout" not in body and body["temperature"] == 0
    fake_providers.add_fault("openai", "hang")
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError):
        await complete(client, params={"timeout": 0.5})
    assert time.monotonic() - started < 1.5


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), 1e30, "10", True])
async def test_a_bad_timeout_is_refused_before_sending(
    fake_providers: FakeProviders, client: Any, bad: Any
) -> None:
    with pytest.raises(ProviderError, match="timeout must be a number of seconds"):
        await complete(client, timeout=bad)
    assert fake_providers.requests == []


@pytest.mark.asyncio
async def test_a_dripping_stream_is_cut_off(fake_providers: FakeProviders, client: Any) -> None:
    """One byte every 50 ms never trips a read timeout; a line taking over 0.5 s does."""
    fake_providers.add_fault("openai", "drip", interval=0.05)
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError, match="to complete one line") as info:
        await stream(client, limits=Limits(idle_read_s=0.5))
    assert time.monotonic() - started < 3
    assert "not retried" in str(info.value)
    assert len(fake_providers.requests) == 1


@pytest.mark.asyncio
async def test_a_stream_ends_at_the_deadline(fake_providers: FakeProviders, client: Any) -> None:
    fake_providers.add_fault("openai", "endless_stream", piece=10)
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError, match="at the deadline"):
        await stream(client, timeout=0.6)
    assert time.monotonic() - started < 2


@pytest.mark.asyncio
async def test_a_silent_stream_hits_the_idle_read_timeout(
    fake_providers: FakeProviders, client: Any
) -> None:
    """No header within the idle read timeout: the attempt times out (and a retry, if the
    deadline leaves room for one, gets the same)."""
    fake_providers.add_fault("openai", "hang", times=5)
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError):
        await stream(client, limits=Limits(idle_read_s=0.4, deadline_s=0.6))
    assert time.monotonic() - started < 1.5
    assert len(fake_providers.requests) == 2  # 0.4 s, then what is left of the 0.6 s


@pytest.mark.asyncio
async def test_each_attempt_has_its_own_times(fake_providers: FakeProviders, client: Any) -> None:
    fake_providers.add_fault("openai", "server_error", times=2, retry_after_ms=150)
    _, attempts = await complete(client)
    assert [a.status for a in attempts] == ["error", "error", "ok"]
    starts = [a.started_at for a in attempts]
    assert all(s is not None for s in starts)
    for before, after in itertools.pairwise(attempts):
        assert after.started_at >= before.started_at + before.latency_s + 0.1  # type: ignore[operator]


@pytest.mark.asyncio
async def test_retries_stop_when_the_deadline_leaves_no_room(
    fake_providers: FakeProviders, client: Any
) -> None:
    fake_providers.add_fault("openai", "server_error", times=3, retry_after=2)
    started = time.monotonic()
    with pytest.raises(ProviderError):
        await complete(client, timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert len(fake_providers.requests) == 1


# -- section 6: failures are never successes ------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", CHAT)
async def test_a_redirect_is_an_error_and_never_followed(
    fake_providers: FakeProviders, client: Any, provider: str
) -> None:
    """A 302 carrying a well-formed answer is not accepted as the answer."""
    fake_providers.add_fault(provider, "redirect", status=302)
    with pytest.raises(ProviderError, match="answered 302, a redirect") as info:
        await complete(client, provider)
    assert info.value.status_code == 302 and info.value.error_type == "redirect"
    assert len(fake_providers.requests) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", CHAT)
@pytest.mark.parametrize("body", [{"unexpected": True}, [], "text", {"choices": []}])
async def test_a_200_of_the_wrong_shape_is_an_error(
    fake_providers: FakeProviders, client: Any, provider: str, body: Any
) -> None:
    fake_providers.add_fault(provider, "wrong_shape", body=body)
    with pytest.raises(ProviderError, match="not retried") as info:
        await complete(client, provider)
    assert info.value.status_code == 200
    assert len(fake_providers.requests) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", CHAT)
async def test_a_cut_off_answer_is_not_retried(
    fake_providers: FakeProviders, client: Any, provider: str
) -> None:
    """A body cut off after the status line may be billed: one attempt, a message saying so."""
    fake_providers.add_fault(provider, "truncated_body", times=3)
    with pytest.raises(StreamError, match="started answering") as info:
        await complete(client, provider)
    message = str(info.value)
    assert "cut off" in message and "not retried" in message and "network" not in message
    assert len(fake_providers.requests) == 1


def test_failed_answers_are_error_rows_with_unknown_cost(fake_providers: FakeProviders) -> None:
    """In the ledger: error rows, cost NULL (never ok, never cost 0)."""
    for provider in CHAT:
        Keystore().set(provider, "test-key-for-" + provider + "-0000000001")
    engine = Engine()

    async def go() -> None:
        try:
            for kind, provider in [
                ("wrong_shape", "anthropic"),
                ("wrong_shape", "gemini"),
                ("redirect", "openai"),
                ("truncated_body", "openai"),
            ]:
                fake_providers.add_fault(provider, kind)
                model = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}
                request = Request(
                    model=f"{provider}:{model.get(provider, 'gemini-2.5-flash')}",
                    messages=MESSAGES,
                )
                with pytest.raises(ProviderError):
                    await engine.acomplete(request)
        finally:
            await engine.aclose()

    asyncio.run(go())
    frame = jupyter_byok.usage(since="1d")
    assert len(frame) == 4, frame[["provider", "status", "error_type", "attempt"]].to_string()
    assert set(frame["status"]) == {"error"}
    assert frame["cost_usd"].isna().all(), frame[["status", "cost_usd", "http_status"]]
    assert not (frame["cost_usd"] == Decimal(0)).any()


def test_attempt_rows_have_their_own_times(fake_providers: FakeProviders) -> None:
    Keystore().set("openai", "test-key-for-openai-0000000001")
    engine = Engine()
    fake_providers.add_fault("openai", "server_error", times=2, retry_after_ms=200)

    async def go() -> None:
        try:
            await engine.acomplete(Request(model="openai:gpt-4o-mini", messages=MESSAGES))
        finally:
            await engine.aclose()

    asyncio.run(go())
    frame = jupyter_byok.usage(since="1d").sort_values("attempt")
    assert list(frame["status"]) == ["error", "error", "ok"]
    starts = [x.timestamp() for x in frame["ts"]]
    ends = [x.timestamp() for x in frame["ts_end"]]
    assert starts[0] < starts[1] < starts[2]
    assert ends[0] <= starts[1] - 0.15 and ends[1] <= starts[2] - 0.15


# -- the Gemini model path --------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "model",
    [
        "../../x",
        "../x",
        "gemini-2.5-flash/../../x",
        "a b",
        "x?alt=json",
        "x#y",
        "x%2F..",
        "x:y",
        "",
    ],
)
async def test_a_gemini_model_name_cannot_leave_the_api_path(
    fake_providers: FakeProviders, client: Any, model: str
) -> None:
    with pytest.raises(ModelIdError, match="is not allowed"):
        await complete(client, "gemini", model=model)
    assert fake_providers.requests == []


@pytest.mark.asyncio
@pytest.mark.parametrize("model", ["gemini-2.5-flash", "models/gemini-2.5-pro", "tunedModels/t-1"])
async def test_gemini_model_names_in_the_safe_set_still_work(
    fake_providers: FakeProviders, client: Any, model: str
) -> None:
    result, _ = await complete(client, "gemini", model=model)
    assert result.text.startswith("Echo:")
    path = fake_providers.requests[-1].path
    assert path.endswith(model.split("/")[-1] + ":generateContent")
