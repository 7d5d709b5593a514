"""The one call path, end to end against the fake providers: every attempt is accounted."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

import jupyter_byok
from jupyter_byok import budgets
from jupyter_byok.engine import Engine
from jupyter_byok.errors import BudgetExceededError, MissingKeyError, RateLimitError, StreamError
from jupyter_byok.keys import Keystore
from jupyter_byok.ledger import Ledger, LedgerRow, default_ledger
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Completion, Message, Request

KEY = "sk-proj-ENGINE" + "e" * 46 + "T3BlbkFJ" + "f" * 20


def request(
    text: str = "hello engine", *, model: str = "openai:gpt-4o-mini", **kw: object
) -> Request:
    return Request(model=model, messages=[Message("user", text)], **kw)  # type: ignore[arg-type]


@pytest.fixture
def engine(fake_providers: FakeProviders) -> Engine:
    Keystore().set("openai", KEY)
    return Engine()


def run(engine: Engine, coro: Any) -> Any:
    """asyncio.run, closing the engine's HTTP clients of that loop before it ends."""

    async def go() -> Any:
        try:
            return await coro
        finally:
            await engine.aclose()

    return asyncio.run(go())


def rows(request_id: str) -> list[dict[str, object]]:
    frame = jupyter_byok.usage()
    return frame[frame["request_id"] == request_id].to_dict("records")  # type: ignore[no-any-return]


def test_success_one_row_with_cost(engine: Engine) -> None:
    done = run(engine, engine.acomplete(request()))
    assert done.text == "Echo: hello engine"
    [row] = rows(done.request_id)
    assert row["status"] == "ok" and row["attempt"] == 1
    assert row["output_tokens"] == done.usage.output_tokens == 3
    assert Decimal(str(row["cost_usd"])).quantize(Decimal("1e-12")) == done.cost_usd.quantize(
        Decimal("1e-12")
    )  # type: ignore[union-attr]
    assert done.cost_source == "computed" and done.ledger_id == row["id"]


def test_retries_are_rows_of_one_request(engine: Engine, fake_providers: FakeProviders) -> None:
    fake_providers.add_fault("openai", "rate_limit", times=2, retry_after_ms=10)
    done = run(engine, engine.acomplete(request()))
    found = sorted(rows(done.request_id), key=lambda r: int(r["attempt"]))  # type: ignore[call-overload]
    assert [r["status"] for r in found] == ["error", "error", "ok"]
    assert [r["http_status"] for r in found][:2] == [429, 429]
    assert len(fake_providers.requests_for("openai")) == 3


def test_exhausted_retries_raise_and_are_all_recorded(
    engine: Engine, fake_providers: FakeProviders
) -> None:
    fake_providers.add_fault("openai", "rate_limit", times=5, retry_after_ms=5)
    with pytest.raises(RateLimitError):
        run(engine, engine.acomplete(request()))
    frame = jupyter_byok.usage()
    assert list(frame["status"]) == ["error"] * 3
    assert frame["request_id"].nunique() == 1


def test_broken_stream_is_an_error_row(engine: Engine, fake_providers: FakeProviders) -> None:
    fake_providers.add_fault("openai", "drop_stream", after=2)

    async def consume() -> list[object]:
        return [item async for item in engine.astream(request("one two three four five"))]

    with pytest.raises(StreamError):
        run(engine, consume())
    frame = jupyter_byok.usage()
    assert len(frame) == 1 and frame["status"].iloc[0] == "error"


def test_stream_yields_text_then_completion(engine: Engine) -> None:
    async def consume() -> list[object]:
        return [item async for item in engine.astream(request("a b c"))]

    items = run(engine, consume())
    assert "".join(i for i in items if isinstance(i, str)) == "Echo: a b c"
    final = items[-1]
    assert isinstance(final, Completion) and final.ttft_s is not None
    assert rows(final.request_id)[0]["stream"]


def test_budget_block_sends_nothing_and_is_recorded(
    engine: Engine, fake_providers: FakeProviders
) -> None:
    budgets.set_budget("day", "0.00001", provider="openai")
    small = {"max_tokens": 2}  # the estimate (an upper bound) fits under the limit
    run(engine, engine.acomplete(request("first call fits", params=small)))
    with pytest.raises(BudgetExceededError) as info:
        run(
            engine,
            engine.acomplete(request("second call could cost more", params={"max_tokens": 4000})),
        )
    assert "budgets" in str(info.value)
    assert len(fake_providers.requests_for("openai")) == 1
    assert list(jupyter_byok.usage()["status"]) == ["ok", "blocked"]


def test_cache_hit_sends_nothing_and_records_the_saving(
    engine: Engine, fake_providers: FakeProviders
) -> None:
    first = run(engine, engine.acomplete(request(cache=True)))
    second = run(engine, engine.acomplete(request(cache=True)))
    assert len(fake_providers.requests_for("openai")) == 1
    assert second.cached and second.text == first.text and second.cost_usd == 0
    [row] = rows(second.request_id)
    assert row["status"] == "cache_hit"
    assert Decimal(str(row["saved_usd"])).quantize(Decimal("1e-12")) == first.cost_usd.quantize(
        Decimal("1e-12")
    )  # type: ignore[union-attr]


def test_missing_key_is_one_line_and_one_row(fake_providers: FakeProviders) -> None:
    with pytest.raises(MissingKeyError) as info:
        (lambda e: run(e, e.acomplete(request(model="xai:grok-4.3"))))(Engine())
    assert "XAI_API_KEY" in str(info.value) and "\n" not in str(info.value)
    frame = jupyter_byok.usage()
    assert list(frame["status"]) == ["error"] and list(frame["provider"]) == ["xai"]
    assert fake_providers.requests == []


def test_cancellation_is_recorded(engine: Engine, fake_providers: FakeProviders) -> None:
    fake_providers.set_latency("openai", 2.0)

    async def cancel_soon() -> None:
        task = asyncio.create_task(engine.acomplete(request()))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(engine, cancel_soon())
    assert list(jupyter_byok.usage()["status"]) == ["cancelled"]


def test_server_engine_refuses_local_models() -> None:
    from jupyter_byok.errors import LocalModelError

    with pytest.raises(LocalModelError, match="kernel"):
        Engine(allow_local=False).resolve("local:smollm2")


def test_local_call_costs_nothing_and_is_recorded() -> None:
    done = jupyter_byok.complete("local:smollm2", "Say yes.", max_tokens=8, n_threads=1)
    assert done.text.strip() and done.cost_usd == 0
    [row] = rows(done.request_id)
    assert row["provider"] == "local" and row["status"] == "ok" and row["input_tokens"] > 0


def test_group_commit_writes_rows_of_a_cancelled_waiter() -> None:
    ledger: Ledger = default_ledger()
    writer = ledger.writer
    futures = [
        writer.submit([LedgerRow(provider="openai", model="m", status="ok")]) for _ in range(50)
    ]
    futures[3].cancel()
    for i, future in enumerate(futures):
        if i != 3:
            assert future.result(timeout=30) is None  # committed: no warning
    after = writer.submit([LedgerRow(provider="openai", model="m", status="ok")])
    assert after.result(timeout=30) is None, "the writer must survive a cancelled waiter"
    assert ledger.count() == 51


def test_public_stream_object_sync_and_async(fake_providers: FakeProviders) -> None:
    Keystore().set("openai", KEY)
    s = jupyter_byok.stream("openai:gpt-4o-mini", "one two")
    with pytest.raises(jupyter_byok.ByokError, match="not finished"):
        _ = s.completion
    assert "".join(s) == "Echo: one two"
    assert s.completion.text == "Echo: one two" and s.completion.usage.output_tokens == 3
    with pytest.raises(jupyter_byok.ByokError, match="once"):
        list(s)

    async def consume() -> tuple[str, object]:
        a = jupyter_byok.stream("openai:gpt-4o-mini", "three four")
        text = "".join([t async for t in a])
        done = await jupyter_byok.acomplete("openai:gpt-4o-mini", "five")
        return text + "|" + a.completion.text, done.text

    from jupyter_byok.engine import get_engine

    joined, done = run(get_engine(), consume())
    assert joined == "Echo: three four|Echo: three four" and done == "Echo: five"


def test_proxies_from_the_environment_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """With HTTPS_PROXY set, provider calls go through the proxy (here: a dead port)."""
    from jupyter_byok.errors import ProviderConnectionError
    from jupyter_byok.providers.base import make_async_client

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    client = make_async_client()
    assert any(getattr(p, "pattern", "").startswith("https") for p in client._mounts)  # type: ignore[union-attr]
    asyncio.run(client.aclose())
    # a call to an https provider fails at the proxy, never going direct
    Keystore().set("openai", KEY)
    monkeypatch.setenv("JUPYTER_BYOK_OPENAI_BASE_URL", "https://api.openai.invalid/v1")
    engine = Engine()
    with pytest.raises(ProviderConnectionError):
        run(engine, engine.acomplete(request()))


def test_estimate_is_an_upper_bound_and_sends_nothing(fake_providers: FakeProviders) -> None:
    Keystore().set("openai", KEY)
    prompt = "Explain the water cycle in two short sentences, please."
    est = jupyter_byok.estimate("openai:gpt-4o-mini", prompt, max_tokens=50)
    assert fake_providers.requests == []
    assert est.max_output_tokens == 50 and est.cost_usd is not None
    done = jupyter_byok.complete("openai:gpt-4o-mini", prompt, max_tokens=50)
    assert done.usage.input_tokens <= est.input_tokens
    assert done.cost_usd is not None and done.cost_usd <= est.cost_usd
    assert "at most $" in str(est)
    assert jupyter_byok.estimate("openai:no-such-model", "x").cost_usd is None
    assert jupyter_byok.estimate("local:smollm2", "x").cost_usd == 0


def test_usage_report_figures(fake_providers: FakeProviders) -> None:
    Keystore().set("openai", KEY)
    jupyter_byok.complete("openai:gpt-4o-mini", "one")
    jupyter_byok.complete("openai:gpt-4o-mini", "two", cache=True)
    jupyter_byok.complete("openai:gpt-4o-mini", "two", cache=True)
    figures = jupyter_byok.usage_report(since="today")
    assert len(figures) == 6
    assert all(type(f).__name__ == "Figure" for f in figures)
    model_figure = figures[1]
    assert any("gpt-4o-mini" in str(list(trace.x) + list(trace.y)) for trace in model_figure.data)
