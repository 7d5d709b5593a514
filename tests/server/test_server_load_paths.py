"""The server's paths for many calls at once: the SSE relay's writes, the status snapshot,
and calls starting a few per loop turn (real in-process Jupyter server, pytest-jupyter)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from waiting import until

from jupyter_byok import errors
from jupyter_byok.server import handlers, service
from jupyter_byok.server.handlers import Turns
from jupyter_byok.testing import FakeProviders

KEY = "sk-proj-" + "L" * 40 + "T3BlbkFJ" + "m" * 20
REQUEST = {"model": "openai:gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
DONE = {"text": "ab", "model": "openai:gpt-4o-mini", "usage": {}}


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_byok": True}, "allow_root": True}}


@pytest.fixture
def svc(jp_serverapp: Any) -> service.ByokService:
    return jp_serverapp.web_app.settings["jupyter_byok"]  # type: ignore[no-any-return]


def events(body: bytes) -> list[tuple[str, Any]]:
    out = []
    for block in body.decode().split("\n\n"):
        if block.strip():
            head, data = block.split("\n", 1)
            out.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


async def post_stream(jp_fetch: Any, **kwargs: Any) -> Any:
    return await jp_fetch(
        "byok",
        "complete",
        method="POST",
        body=json.dumps({**REQUEST, "stream": True}),
        raise_error=False,
        **kwargs,
    )


def stub_engine(svc: service.ByokService, monkeypatch: pytest.MonkeyPatch, items: Any) -> None:
    """The engine's stream replaced by ``items(request)`` (an async generator function)."""
    monkeypatch.setattr(svc.engine, "astream", items)


def count_flushes(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Times of the relay's own flushes (not the one inside finish())."""
    seen: list[float] = []
    original = handlers.CompleteHandler.flush

    def flush(self: Any, include_footers: bool = False) -> Any:
        if not include_footers:
            seen.append(time.monotonic())
        return original(self, include_footers)

    monkeypatch.setattr(handlers.CompleteHandler, "flush", flush)
    return seen


# ------------------------------------------------------------------------------ relay
async def test_answer_arriving_together_leaves_in_one_write(
    jp_fetch: Any, svc: service.ByokService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def together(request: Any) -> AsyncIterator[Any]:
        yield "a"
        yield "b"
        yield DONE

    stub_engine(svc, monkeypatch, together)
    flushes = count_flushes(monkeypatch)
    response = await post_stream(jp_fetch)
    assert response.code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert "Content-Length" in response.headers  # finished without an earlier flush
    assert flushes == []
    assert events(response.body) == [
        ("delta", {"text": "a"}),
        ("delta", {"text": "b"}),
        ("done", DONE),
    ]


async def test_pieces_spread_in_time_are_streamed_as_they_come(
    jp_fetch: Any, svc: service.ByokService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def slow(request: Any) -> AsyncIterator[Any]:
        for piece in ("a", "b", "c"):
            yield piece
            await asyncio.sleep(0.15)
        yield DONE

    stub_engine(svc, monkeypatch, slow)
    arrivals: list[tuple[float, bytes]] = []
    response = await post_stream(
        jp_fetch, streaming_callback=lambda chunk: arrivals.append((time.monotonic(), chunk))
    )
    assert response.code == 200
    assert response.headers.get("Transfer-Encoding") == "chunked"
    first_delta = next(t for t, chunk in arrivals if b"event: delta" in chunk)
    done = next(t for t, chunk in arrivals if b"event: done" in chunk)
    assert done - first_delta > 0.3  # each piece was sent when it came, not at the end
    assert [e for e, _ in events(b"".join(c for _, c in arrivals))] == ["delta"] * 3 + ["done"]


async def test_pieces_close_together_share_flushes(
    jp_fetch: Any, svc: service.ByokService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def chatty(request: Any) -> AsyncIterator[Any]:
        for i in range(60):
            yield f"w{i} "
            await asyncio.sleep(0.001)  # a piece per loop turn, ~60-100 ms in all
        yield DONE

    stub_engine(svc, monkeypatch, chatty)
    flushes = count_flushes(monkeypatch)
    response = await post_stream(jp_fetch)
    assert response.code == 200
    got = events(response.body)
    assert "".join(d["text"] for e, d in got if e == "delta") == "".join(
        f"w{i} " for i in range(60)
    )
    assert 1 <= len(flushes) < 60, len(flushes)  # at most one per FLUSH_INTERVAL_S:
    gaps = [b - a for a, b in itertools.pairwise(flushes)]
    assert all(gap >= handlers.FLUSH_INTERVAL_S * 0.9 for gap in gaps), gaps


async def test_error_before_the_first_piece_is_a_json_error(
    jp_fetch: Any, svc: service.ByokService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(request: Any) -> AsyncIterator[Any]:
        raise errors.RateLimitError("slow down", provider="openai", status_code=429)
        yield  # pragma: no cover - makes this an async generator

    stub_engine(svc, monkeypatch, refused)
    response = await post_stream(jp_fetch)
    assert response.code == 429
    body = json.loads(response.body)
    assert body["error"] == "RateLimitError" and body["provider_status"] == 429


async def test_error_after_pieces_is_an_error_event(
    jp_fetch: Any, svc: service.ByokService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(request: Any) -> AsyncIterator[Any]:
        yield "a"
        raise errors.ProviderError("the stream broke off", provider="openai")

    stub_engine(svc, monkeypatch, broken)
    response = await post_stream(jp_fetch)
    assert response.code == 200
    got = events(response.body)
    assert got[0] == ("delta", {"text": "a"})
    assert got[-1][0] == "error" and got[-1][1]["error"] == "ProviderError"


async def test_unknown_model_in_a_stream_is_still_a_400(jp_fetch: Any) -> None:
    body = json.dumps({**REQUEST, "model": "nosuch:x", "stream": True})
    response = await jp_fetch("byok", "complete", method="POST", body=body, raise_error=False)
    assert response.code == 400 and "unknown provider" in json.loads(response.body)["message"]
    body = json.dumps({**REQUEST, "model": "local:smollm2", "stream": True})
    response = await jp_fetch("byok", "complete", method="POST", body=body, raise_error=False)
    assert response.code == 400 and "kernel" in json.loads(response.body)["message"]


async def test_many_streams_at_once_all_complete(
    jp_fetch: Any,
    jp_serverapp: Any,
    fake_providers: FakeProviders,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jp_serverapp.web_app.settings["jupyter_byok_turns"], "per_turn", 2)
    fake_providers.set_latency("openai", 0.05)
    response = await jp_fetch(
        "byok", "keys", method="POST", body=json.dumps({"provider": "openai", "key": KEY})
    )
    assert response.code == 201

    async def one(i: int) -> str:
        body = {**REQUEST, "messages": [{"role": "user", "content": f"call {i}"}], "stream": True}
        response = await jp_fetch("byok", "complete", method="POST", body=json.dumps(body))
        done = [d for e, d in events(response.body) if e == "done"]
        return str(done[0]["text"])

    texts = await asyncio.gather(*(one(i) for i in range(24)))
    assert texts == [f"Echo: call {i}" for i in range(24)]
    status = json.loads((await jp_fetch("byok", "status")).body)
    assert float(status["spend_today_usd"]) > 0


# ------------------------------------------------------------------------------ turns
async def test_turns_start_a_few_per_loop_turn_in_arrival_order() -> None:
    turns = Turns(per_turn=2)
    started: list[tuple[int, int]] = []
    turn = 0

    async def count_turns() -> None:
        nonlocal turn
        while True:
            await asyncio.sleep(0)
            turn += 1

    async def call(i: int) -> None:
        wait = turns.wait()
        if wait is not None:
            await wait
        started.append((i, turn))

    counter = asyncio.ensure_future(count_turns())
    await asyncio.gather(*(call(i) for i in range(7)))
    counter.cancel()
    assert [i for i, _ in started] == list(range(7))
    per_turn: dict[int, int] = {}
    for _, t in started:
        per_turn[t] = per_turn.get(t, 0) + 1
    assert max(per_turn.values()) <= 2 and len(per_turn) >= 4


async def test_turns_skip_callers_that_went_away() -> None:
    turns = Turns(per_turn=1)
    assert turns.wait() is None
    gone, kept = turns.wait(), turns.wait()
    assert gone is not None and kept is not None
    gone.cancel()
    await asyncio.wait_for(kept, 1)  # the cancelled one did not use up a turn
    await asyncio.sleep(0)  # one loop turn: ``kept`` starts, in the place ``gone`` left
    assert kept.done() and not kept.cancelled()


# ----------------------------------------------------------------------------- status
def count_collections(svc: service.ByokService, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = svc._collect

    def collect() -> str:
        calls.append(1)
        return original()

    monkeypatch.setattr(svc, "_collect", collect)
    return calls


async def status(jp_fetch: Any) -> dict[str, Any]:
    response = await jp_fetch("byok", "status")
    assert response.code == 200
    assert response.headers["Content-Type"] == "application/json"
    return dict(json.loads(response.body))


async def test_status_is_served_from_a_snapshot_while_nothing_changes(
    jp_fetch: Any, svc: service.ByokService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await status(jp_fetch)  # the first one creates the ledger: the next one collects again
    first = await status(jp_fetch)
    assert "as_of" in first
    collections = count_collections(svc, monkeypatch)
    for _ in range(3):
        assert await status(jp_fetch) == first
    assert collections == []
    assert svc.status_now() is not None  # answered on the loop, no thread hop

    monkeypatch.setattr(service, "STATUS_TTL_S", 0.0)  # "today" moves on: collected again
    await status(jp_fetch)
    assert collections == [1]


async def test_status_sees_every_change_made_before_it(
    jp_fetch: Any,
    svc: service.ByokService,
    fake_providers: FakeProviders,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = await status(jp_fetch)
    assert before["keystore"]["entries"] == 0 and float(before["spend_today_usd"]) == 0
    response = await jp_fetch(
        "byok", "keys", method="POST", body=json.dumps({"provider": "openai", "key": KEY})
    )
    assert response.code == 201
    assert (await status(jp_fetch))["keystore"]["entries"] == 1  # a key added here

    await jp_fetch("byok", "complete", method="POST", body=json.dumps(REQUEST))
    after_call = await status(jp_fetch)
    assert float(after_call["spend_today_usd"]) > 0  # a call finished here

    from jupyter_byok.keys import Keystore

    Keystore().set("anthropic", "sk-ant-" + "x" * 40)  # another process (the CLI)
    assert (await status(jp_fetch))["keystore"]["entries"] == 2

    response = await jp_fetch(
        "byok", "config", method="PUT", body=json.dumps({"default_model": "openai:gpt-4o"})
    )
    assert response.code == 200
    assert (await status(jp_fetch))["default_model"] == "openai:gpt-4o"
    assert KEY not in json.dumps(await status(jp_fetch))


async def test_status_while_calls_are_in_flight_does_not_wait_for_a_collection(
    jp_fetch: Any, svc: service.ByokService, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()

    async def held(request: Any) -> AsyncIterator[Any]:
        if request.messages[-1].content == "hold":
            await release.wait()
        yield "a"
        yield DONE

    stub_engine(svc, monkeypatch, held)
    monkeypatch.setattr(service, "STATUS_BUSY_AGE_S", 60.0)  # no timing in this test
    monkeypatch.setattr(service, "STATUS_BUSY_REFRESH_S", 60.0)
    snapshot = await status(jp_fetch)
    collections = count_collections(svc, monkeypatch)
    body = json.dumps(
        {**REQUEST, "messages": [{"role": "user", "content": "hold"}], "stream": True}
    )
    in_flight = asyncio.ensure_future(
        jp_fetch("byok", "complete", method="POST", body=body, request_timeout=30)
    )
    await until(lambda: svc._in_flight)
    assert svc._in_flight == 1
    assert (await post_stream(jp_fetch)).code == 200  # another call ends meanwhile
    assert await status(jp_fetch) == snapshot  # at most STATUS_BUSY_AGE_S old, not waited for
    assert collections == []

    release.set()
    assert (await in_flight).code == 200
    await status(jp_fetch)
    assert collections == [1]  # idle again: exact


async def test_concurrent_status_requests_share_one_collection(
    jp_fetch: Any, svc: service.ByokService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await status(jp_fetch)
    await status(jp_fetch)
    svc._edited()  # as a key or setting change through the server would
    collections = count_collections(svc, monkeypatch)
    replies = await asyncio.gather(*(status(jp_fetch) for _ in range(8)))
    assert all(r == replies[0] for r in replies)
    assert collections == [1]


async def test_status_error_is_mapped_and_not_cached(
    jp_fetch: Any, svc: service.ByokService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> str:
        raise errors.KeystoreError("keystore unreadable")

    working = svc._collect
    svc._collect = broken  # type: ignore[method-assign]
    try:
        response = await jp_fetch("byok", "status", raise_error=False)
    finally:
        del svc._collect
    assert svc._collect == working
    assert response.code == 409 and json.loads(response.body)["error"] == "KeystoreError"
    assert (await jp_fetch("byok", "status")).code == 200


def test_the_server_runs_one_full_collection_as_soon_as_it_serves() -> None:
    """Python's first full collection of a fresh server's heap takes ~150 ms in one loop
    turn; it is run up front instead of inside the first busy moment."""
    import asyncio
    import gc
    from types import SimpleNamespace

    from tornado.ioloop import IOLoop

    from jupyter_byok.server import _collect_once_serving

    async def serve_a_little() -> int:
        before = gc.get_stats()[2]["collections"]
        _collect_once_serving(SimpleNamespace(io_loop=IOLoop.current()))
        assert gc.get_stats()[2]["collections"] == before  # not at load: once serving
        await until(lambda: gc.get_stats()[2]["collections"] > before)
        for _ in range(20):  # and no second one in the loop turns that follow
            await asyncio.sleep(0)
        return int(gc.get_stats()[2]["collections"] - before)

    # automatic collections off, so that the count is the server's alone: exactly one
    enabled = gc.isenabled()
    gc.disable()
    try:
        assert asyncio.run(serve_a_little()) == 1
    finally:
        if enabled:
            gc.enable()


async def test_one_full_collection_once_the_first_calls_are_done(
    jp_fetch: Any, svc: service.ByokService, fake_providers: FakeProviders
) -> None:
    """The first calls import the engine's working set; the full collection that would
    follow runs in the first moment nothing is in flight, once."""
    import gc

    response = await jp_fetch(
        "byok", "keys", method="POST", body=json.dumps({"provider": "openai", "key": KEY})
    )
    assert response.code == 201
    assert not svc._collected
    before = gc.get_stats()[2]["collections"]
    body = {**REQUEST, "stream": False}
    first, second = await asyncio.gather(
        *(jp_fetch("byok", "complete", method="POST", body=json.dumps(body)) for _ in range(2))
    )
    assert first.code == second.code == 200
    # the collection runs on the loop once both are done
    await until(lambda: gc.get_stats()[2]["collections"] > before)
    assert svc._collected
