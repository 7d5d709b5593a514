"""Pipeline.map over DataFrames against the fake providers: throughput, ledger rows,
interruption and resume, 429s, estimates and progress.

The full-size run (1,000 rows, concurrency 32, 50 ms) is benchmarks/bench_pipeline_map.py;
here a smaller map checks the same properties.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pandas as pd
import pytest

import jupyter_byok
from jupyter_byok import engine as engine_module
from jupyter_byok._runner import run_sync
from jupyter_byok.client import get_client
from jupyter_byok.keys import Keystore
from jupyter_byok.pipeline import AdaptiveLimiter, CostConfirmationError, Pipeline
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Message, Request


@pytest.fixture(autouse=True)
def fresh_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(engine_module, "_engine", None)
    yield
    engine = engine_module._engine
    if engine is not None:
        run_sync(engine.aclose())


@pytest.fixture
def fake(fake_providers: FakeProviders) -> FakeProviders:
    Keystore().set("openai", "sk-test-map-" + "k" * 30)
    Keystore().set("anthropic", "sk-ant-test-map-" + "k" * 30)
    return fake_providers


def two_node() -> Pipeline:
    p = Pipeline("batch")
    p.llm("summary", "openai:gpt-4o-mini", "Summarize: {input.text}", max_tokens=16)
    p.llm("label", "anthropic:claude-haiku-4-5", "Label {summary}", max_tokens=16)
    return p


def frame(n: int, tag: str = "row") -> pd.DataFrame:
    return pd.DataFrame({"body": [f"{tag} {i}" for i in range(n)]}, index=range(100, 100 + n))


def ok_rows(pipeline: str) -> pd.DataFrame:
    rows = jupyter_byok.usage()
    return rows[(rows["pipeline"] == pipeline) & (rows["status"] == "ok")]


def test_map_outputs_costs_and_one_ledger_row_per_call(fake: FakeProviders) -> None:
    n, c = 96, 32
    fake.latency = 0.05
    p = two_node()

    # the floor: the same number of calls straight through the client, same concurrency
    async def direct() -> float:
        sem = asyncio.Semaphore(c)
        client = get_client()

        async def one(i: int) -> None:
            async with sem:
                for model in ("openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"):
                    await client.acomplete(
                        Request(model, [Message("user", f"direct {i}")], {"max_tokens": 16})
                    )

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.monotonic() - started

    run_sync(direct())  # warm: connections, ledger
    floor = run_sync(direct())
    started = time.monotonic()
    out = p.map(frame(n), {"text": "body"}, concurrency=c, progress=False)
    wall = time.monotonic() - started
    # the pipeline adds little over the calls it makes (absolute figures: the benchmark;
    # the margin is for a shared 2-core machine), and is far from serial (9.6 s)
    assert wall < 1.5 * floor + 1.0, (wall, floor)
    assert wall < n * 2 * 0.05 / 2
    assert out.attrs["peak_in_flight"] <= c

    assert list(out.index) == list(range(100, 100 + n))
    assert out.loc[105, "summary"] == "Echo: Summarize: row 5"
    assert out.loc[105, "label"] == "Echo: Label Echo: Summarize: row 5"
    assert (out["cost_usd"] > 0).all() and (out["output_tokens"] > 0).all()
    assert (out["cached_nodes"] == 0).all()
    ledger = ok_rows("batch")
    assert (ledger["node"] == "summary").sum() == n
    assert (ledger["node"] == "label").sum() == n
    assert ledger["cost_usd"].sum() == pytest.approx(out["cost_usd"].sum())

    fake.reset()
    again = p.map(frame(n), {"text": "body"}, concurrency=c, progress=False)
    assert fake.requests == []
    assert (again["cached_nodes"] == 2).all() and again["cost_usd"].sum() == 0
    assert (again["label"] == out["label"]).all()


def test_map_interrupted_halfway_resumes_without_repaying(fake: FakeProviders) -> None:
    n = 200
    fake.latency = 0.02
    p = Pipeline("resume")
    p.llm("summary", "openai:gpt-4o-mini", "Summarize: {input.text}", max_tokens=16)
    df = frame(n)

    async def interrupted() -> None:
        task = asyncio.ensure_future(p.amap(df, {"text": "body"}, concurrency=16, progress=False))
        while len(fake.requests) < n // 2:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_sync(interrupted())
    time.sleep(0.1)
    paid_first = ok_rows("resume")
    finished = len(paid_first)
    assert n // 2 - 16 <= finished < n
    rows = jupyter_byok.usage()
    assert set(rows[rows["pipeline"] == "resume"]["status"]) <= {"ok", "cancelled"}

    fake.reset()
    out = p.map(df, {"text": "body"}, concurrency=16, progress=False)
    assert out["summary"].notna().all()
    cached = int(out["cached_nodes"].sum())
    assert cached >= finished - 16  # at most the calls in flight at the interrupt are lost
    assert len(fake.requests) == n - cached  # finished rows are not asked (or paid) again
    paid = ok_rows("resume")
    assert n <= len(paid) <= n + 16
    assert paid["request_id"].is_unique


def test_map_backs_off_on_rate_limits_and_completes(fake: FakeProviders) -> None:
    # 30 answers of 429 with Retry-After: the dispatch layer retries each call twice, then
    # the map halves its concurrency, pauses and retries the row
    fake.add_fault("openai", "rate_limit", times=30, retry_after=0.05)
    p = Pipeline("limited")
    p.llm("summary", "openai:gpt-4o-mini", "Summarize: {input.text}", max_tokens=16)
    out = p.map(frame(40), {"text": "body"}, concurrency=8, progress=False)
    assert out["summary"].notna().all()
    assert out.attrs["rate_limited"] >= 1
    assert out.attrs["lowest_concurrency"] < 8
    ledger = jupyter_byok.usage()
    ledger = ledger[ledger["pipeline"] == "limited"]
    assert (ledger["status"] == "ok").sum() == 40
    assert (ledger["http_status"] == 429).sum() == 30


def test_adaptive_limiter_pauses_for_retry_after_and_recovers() -> None:
    async def scenario() -> tuple[float, int, int]:
        limiter = AdaptiveLimiter(8)
        limiter.backoff(0.3)
        assert limiter.limit == 4
        started = time.monotonic()
        async with limiter.slot():
            waited = time.monotonic() - started
        for _ in range(40):
            async with limiter.slot():
                pass
        return waited, limiter.limit, limiter.active

    waited, limit, active = run_sync(scenario())
    assert waited >= 0.28
    assert limit == 8 and active == 0


def test_estimate_before_running_and_confirmation(fake: FakeProviders) -> None:
    p = two_node()
    df = frame(20)
    est = p.estimate(df, {"text": "body"})
    assert est.rows == 20 and est.calls == 40 and est.cached_calls == 0
    assert est.cost_usd > 0 and set(est.per_node) == {"summary", "label"}
    # non-interactive: above the threshold it raises instead of waiting for an answer
    with pytest.raises(CostConfirmationError, match="confirm_above"):
        p.map(df, {"text": "body"}, confirm_above=0.0, progress=False)
    assert fake.requests == []
    p.map(df.iloc[:10], {"text": "body"}, progress=False)
    resumed = p.estimate(df, {"text": "body"})
    assert resumed.cached_calls == 20 and resumed.calls == 20
    assert resumed.cost_usd < est.cost_usd
    assert p.estimate(text="one run").calls == 2
    out = p.map(df, {"text": "body"}, confirm_above=1000.0, progress=False)
    assert len(out) == 20


def test_search_nodes_are_in_the_estimate_at_their_credit_price(fake: FakeProviders) -> None:
    """A search is 1 credit (basic) or 2 (advanced) at $0.008, in the estimate as in the
    ledger row the search then writes."""
    from decimal import Decimal

    Keystore().set("tavily", "tvly-dev-estimate" + "t" * 20)
    p = Pipeline("searching", cache=False)
    p.search("basic", "{input.q}")
    p.search("deep", "{input.q} in depth", depth="advanced")
    est = p.estimate(frame(3), {"q": "body"})
    assert est.unpriced == [] and est.calls == 6
    assert est.per_node == {"basic": Decimal("0.024"), "deep": Decimal("0.048")}
    assert est.cost_usd == Decimal("0.072")
    p.map(frame(3), {"q": "body"}, progress=False)
    rows = jupyter_byok.usage()
    spent = rows[rows["pipeline"] == "searching"].groupby("node")["cost_usd"].sum()
    assert spent.to_dict() == pytest.approx({"basic": 0.024, "deep": 0.048})


def test_errors_can_be_stored_per_row_and_text_progress(
    fake: FakeProviders, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.add_fault("anthropic", "bad_request", times=1)
    p = two_node()
    out = p.map(frame(6), {"text": "body"}, concurrency=1, errors="store", progress=True)
    failed = out[out["error"].notna()]
    assert len(failed) == 1 and "label" in failed["error"].iloc[0]
    assert out["label"].notna().sum() == 5
    assert "6/6 rows" in capsys.readouterr().err
    with pytest.raises(jupyter_byok.ByokError, match="no column 'nope'"):
        p.map(frame(2), {"text": "nope"})
