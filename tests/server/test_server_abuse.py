"""One bad provider, or one bad client, cannot freeze or exhaust the Jupyter server.

On a real in-process Jupyter server (pytest-jupyter) against the abusive loopback fakes
(``jupyter_byok/testing/abuse.py``), with limits shortened through the environment; each
test is a reproduction of issue 15 (sections 4 and 5).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

import jupyter_byok
from jupyter_byok.testing import FakeProviders

KEY = "sk-proj-ABUSE" + "a" * 40 + "T3BlbkFJ" + "b" * 20
MIB = 1024 * 1024


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_byok": True}, "allow_root": True}}


async def add_key(jp_fetch: Any) -> None:
    body = json.dumps({"provider": "openai", "key": KEY})
    response = await jp_fetch("byok", "keys", method="POST", body=body)
    assert response.code == 201


async def raw_request(
    port: int, head: str, body: bytes = b"", *, read: bool = True
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode("latin-1") + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 5) if read else b""
    return reader, writer, answer


def request_head(base_url: str, auth: dict[str, str], path: str, headers: dict[str, str]) -> str:
    lines = [f"POST {base_url}byok/{path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [
        f"{k}: {v}" for k, v in {**auth, "Content-Type": "application/json", **headers}.items()
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


async def until(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``condition`` (state of another thread or process, nothing to await) until true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("the condition did not become true in time")


def ledger_rows() -> list[dict[str, Any]]:
    frame = jupyter_byok.usage(since="1d")
    rows: list[dict[str, Any]] = frame.to_dict("records")
    return rows


async def test_a_huge_request_body_is_refused_before_it_is_read(
    jp_fetch: Any, jp_http_port: int, jp_base_url: str, jp_auth_header: dict[str, str]
) -> None:
    """A 500 MB Content-Length is refused at once (413), without sending any of the body."""
    for path in ("complete", "keys", "search", "budgets"):
        started = time.monotonic()
        head = request_head(jp_base_url, jp_auth_header, path, {"Content-Length": "500000000"})
        _, writer, answer = await raw_request(jp_http_port, head)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"request body too large (500,000,000 bytes" in answer
        assert time.monotonic() - started < 2
        writer.close()


async def test_a_chunked_body_over_the_limit_is_refused(
    jp_fetch: Any, jp_http_port: int, jp_base_url: str, jp_auth_header: dict[str, str]
) -> None:
    head = request_head(jp_base_url, jp_auth_header, "complete", {"Transfer-Encoding": "chunked"})
    piece = b"x" * 65536
    body = (b"%x\r\n%s\r\n" % (len(piece), piece)) * 20 + b"0\r\n\r\n"  # 1.3 MB
    _, writer, answer = await raw_request(jp_http_port, head, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    writer.close()


async def test_a_client_that_goes_away_cancels_its_non_streamed_call(
    jp_fetch: Any,
    jp_http_port: int,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
    fake_providers: FakeProviders,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hung provider, and the kernel gives up: the server stops the call at once (one
    ``cancelled`` row) instead of holding it for the provider's 10 minutes, and logs the
    request as closed by the client (499), not as a server error."""
    await add_key(jp_fetch)
    fake_providers.add_fault("openai", "hang")
    body = json.dumps({"model": "openai:gpt-4o-mini", "prompt": "hello"}).encode()
    head = request_head(jp_base_url, jp_auth_header, "complete", {"Content-Length": str(len(body))})
    _, writer, _ = await raw_request(jp_http_port, head, body, read=False)
    await until(lambda: fake_providers.requests_for("openai"))
    writer.close()
    rows = await until(lambda: [r for r in ledger_rows() if r["status"] == "cancelled"])
    assert len(rows) == 1 and rows[0]["provider"] == "openai"
    await until(lambda: any("499 POST" in r.getMessage() for r in caplog.records))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_hung_provider_ends_at_the_call_timeout(
    jp_fetch: Any, fake_providers: FakeProviders
) -> None:
    await add_key(jp_fetch)
    fake_providers.add_fault("openai", "slow_headers", times=5, interval=0.1)
    started = time.monotonic()
    request = {"model": "openai:gpt-4o-mini", "prompt": "hi", "params": {"timeout": 1}}
    response = await jp_fetch(
        "byok", "complete", method="POST", body=json.dumps(request), raise_error=False
    )
    assert time.monotonic() - started < 3
    assert response.code == 504
    assert "deadline of 1 s" in json.loads(response.body)["message"]
    [row] = ledger_rows()
    assert row["status"] == "timeout"
    assert len(fake_providers.requests_for("openai")) == 1


async def test_an_endless_stream_ends_with_an_error_event_at_the_cap(
    jp_fetch: Any, fake_providers: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_BYOK_MAX_RESPONSE_BYTES", str(2 * MIB))
    await add_key(jp_fetch)
    fake_providers.add_fault("openai", "endless_stream")
    request = {"model": "openai:gpt-4o-mini", "prompt": "hi", "stream": True}
    response = await jp_fetch(
        "byok", "complete", method="POST", body=json.dumps(request), raise_error=False
    )
    text = response.body.decode()
    assert "event: error" in text and "ResponseTooLargeError" in text
    assert "more than 2,097,152 bytes in the stream" in text
    [row] = ledger_rows()
    assert row["status"] == "error" and row["http_status"] == 200
    assert row["error_type"] == "ResponseTooLargeError"
    assert row["cost_usd"] is None or row["cost_usd"] != row["cost_usd"]  # NULL (None or NaN)


async def test_the_loop_stays_free_while_a_large_answer_is_parsed(
    jp_fetch: Any, fake_providers: FakeProviders
) -> None:
    """A 20 MB answer of millions of tiny JSON values takes seconds to parse: the server's
    loop (here the test's own) never stalls for long meanwhile, and the answer arrives."""
    await add_key(jp_fetch)
    request = {"model": "openai:gpt-4o-mini", "prompt": "hi"}
    # a first call: the server's one full garbage collection after its first calls
    # (server/service.py) runs now, not inside the measurement
    await jp_fetch("byok", "complete", method="POST", body=json.dumps(request))
    await asyncio.sleep(0.05)
    fake_providers.add_fault("openai", "huge_body", size=20 * MIB, shape="nested")
    worst = 0.0  # the most CPU the loop's thread spent between two ticks
    done = asyncio.Event()

    async def ticker() -> None:
        # CPU time of this thread, not wall time: on a loaded machine (or with the fake's
        # thread holding the GIL) a tick can come late without anything blocking the loop
        nonlocal worst
        last = time.thread_time()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.thread_time()
            worst, last = max(worst, now - last), now

    task = asyncio.create_task(ticker())
    try:
        response = await jp_fetch("byok", "complete", method="POST", body=json.dumps(request))
    finally:
        done.set()
        await task
    assert json.loads(response.body)["text"] == "tiny answer"
    assert worst < 0.2, f"the loop was busy for {worst:.3f} s in one turn"
