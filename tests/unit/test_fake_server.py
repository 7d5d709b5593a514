"""The fake providers' HTTP/1.1 server itself: concurrency, keep-alive, pipelining, refusals."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time

import httpx
import pytest

from jupyter_byok.testing import FakeProviders

pytest_plugins = ["jupyter_byok.testing.pytest_plugin"]

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two"}]}
AUTH = "Authorization: Bearer sk-1\r\n"


def connect(fake: FakeProviders) -> socket.socket:
    host, port = fake.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def post(path: str, body: object, headers: str = AUTH) -> bytes:
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: fake\r\nContent-Length: {len(data)}\r\n{headers}\r\n"
    return head.encode() + data


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response (content-length or chunked) from ``sock``; the rest stays in ``buffer``."""

    def fill() -> None:
        data = sock.recv(65536)
        if not data:
            raise EOFError
        buffer.extend(data)

    while b"\r\n\r\n" not in buffer:
        fill()
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    buffer[:] = rest
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buffer:
                fill()
            size_line, _, rest = bytes(buffer).partition(b"\r\n")
            size = int(size_line, 16)
            while len(rest) < size + 2:
                fill()
                rest = bytes(buffer).partition(b"\r\n")[2]
            body += rest[:size]
            buffer[:] = rest[size + 2 :]
            if size == 0:
                return status, headers, body
    length = int(headers.get("content-length", "0"))
    while len(buffer) < length:
        fill()
    body = bytes(buffer[:length])
    del buffer[:length]
    return status, headers, body


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_hundreds_of_concurrent_slow_streams_overlap(fake_providers: FakeProviders) -> None:
    """200 streams at 50 ms each take about 50 ms in all, not 200 × 50 ms (nor a thread each)."""
    from httpx_aiohttp import AiohttpTransport

    fake_providers.latency = 0.05
    url = fake_providers.base_url("openai") + "/chat/completions"
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    calls = 200

    async def main() -> float:
        limits = httpx.Limits(max_connections=calls, max_keepalive_connections=calls)
        transport = AiohttpTransport(limits=limits, trust_env=False)
        async with httpx.AsyncClient(timeout=30, transport=transport) as client:  # type: ignore[arg-type]

            async def one() -> str:
                headers = {"Authorization": "Bearer sk-1"}
                async with client.stream("POST", url, json=body, headers=headers) as response:
                    assert response.status_code == 200
                    return "".join([line async for line in response.aiter_lines()])

            await one()  # warm up
            started = time.perf_counter()
            texts = await asyncio.gather(*(one() for _ in range(calls)))
            wall = time.perf_counter() - started
            assert all(t.endswith("data: [DONE]") for t in texts)
            # 200 open keep-alive connections, and not one thread more for them
            assert threading.active_count() <= threads_before
            return wall

    threads_before = threading.active_count()
    wall = asyncio.run(main())
    assert len(fake_providers.requests) == calls + 1 and fake_providers.errors == []
    if not sys.flags.dev_mode:  # asyncio's debug mode slows every callback many times over
        assert wall < 1.0, f"{calls} concurrent 50 ms streams took {wall:.2f} s"


def test_a_slow_answer_does_not_hold_up_others(fake_providers: FakeProviders) -> None:
    url = fake_providers.base_url("openai") + "/chat/completions"
    fake_providers.add_fault("openai", "slow_first_byte", delay=1.0)
    finished: dict[str, float] = {}

    def call(name: str) -> None:
        r = httpx.post(url, json=CHAT, headers={"Authorization": "Bearer k"})
        assert r.status_code == 200
        finished[name] = time.perf_counter()

    slow = threading.Thread(target=call, args=("slow",))
    slow.start()
    while not fake_providers.requests:  # the slow one has arrived and is waiting
        time.sleep(0.01)
    call("fast")
    slow.join(timeout=10)
    assert finished["fast"] < finished["slow"]


def test_keep_alive_and_pipelined_requests_on_one_connection(
    fake_providers: FakeProviders,
) -> None:
    path = "/openai/v1/chat/completions"
    stream = {**CHAT, "stream": True}
    with connect(fake_providers) as sock:
        buffer = bytearray()
        sock.sendall(post(path, CHAT))
        status, _, body = read_response(sock, buffer)
        assert status == 200 and json.loads(body)["object"] == "chat.completion"
        # three requests in one write, the middle one streamed: answered in order
        sock.sendall(
            post(path, CHAT)
            + post(path, stream)
            + b"GET /v1/models HTTP/1.1\r\n"
            + AUTH.encode()
            + b"\r\n"
        )
        first, second, third = (read_response(sock, buffer) for _ in range(3))
        assert first[0] == second[0] == third[0] == 200
        assert second[1]["transfer-encoding"] == "chunked"
        assert second[2].endswith(b"data: [DONE]\n\n")
        assert json.loads(third[2])["object"] == "list"
        # a request dribbled in byte by byte is put together
        for byte in post(path, CHAT):
            sock.sendall(bytes([byte]))
        assert read_response(sock, buffer)[0] == 200
        assert buffer == bytearray()
    assert [r.method for r in fake_providers.requests] == ["POST"] * 3 + ["GET", "POST"]
    assert fake_providers.requests[1].body == CHAT


def test_connection_close_is_honoured(fake_providers: FakeProviders) -> None:
    with connect(fake_providers) as sock:
        buffer = bytearray()
        request = post("/openai/v1/chat/completions", CHAT, AUTH + "Connection: close\r\n")
        sock.sendall(request + post("/openai/v1/chat/completions", CHAT))  # the second is ignored
        assert read_response(sock, buffer)[0] == 200
        assert buffer == bytearray() and closed_by_peer(sock)
    assert len(fake_providers.requests) == 1


def test_http_10_closes_unless_kept_alive(fake_providers: FakeProviders) -> None:
    with connect(fake_providers) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.0\r\n" + AUTH.encode() + b"\r\n")
        assert read_response(sock, bytearray())[0] == 200 and closed_by_peer(sock)
    with connect(fake_providers) as sock:
        buffer = bytearray()
        for _ in range(2):
            request = b"GET /v1/models HTTP/1.0\r\nConnection: keep-alive\r\n" + AUTH.encode()
            sock.sendall(request + b"\r\n")
            assert read_response(sock, buffer)[0] == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET / FTP/1.0\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400),
        (b"PUT /openai/v1/models HTTP/1.1\r\n\r\n", 501),
        (b"POST /search HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    ],
)
def test_garbage_is_refused_and_the_connection_closed(
    fake_providers: FakeProviders, request_bytes: bytes, status: int
) -> None:
    with connect(fake_providers) as sock:
        sock.sendall(request_bytes)
        got, headers, body = read_response(sock, bytearray())
        assert got == status and headers["connection"] == "close"
        assert "message" in json.loads(body)["error"]
        assert closed_by_peer(sock)
    assert fake_providers.requests == [] and fake_providers.errors == []


def test_a_dropped_stream_cuts_the_connection_mid_body(fake_providers: FakeProviders) -> None:
    fake_providers.add_fault("openai", "drop_stream", after=2)
    with connect(fake_providers) as sock:
        sock.sendall(post("/openai/v1/chat/completions", {**CHAT, "stream": True}))
        received = b""
        while data := sock.recv(65536):
            received += data
    assert b"transfer-encoding: chunked" in received
    assert received.count(b"data: {") == 2 and not received.endswith(b"0\r\n\r\n")


def test_a_client_hanging_up_early_is_no_error(fake_providers: FakeProviders) -> None:
    fake_providers.latency = 0.2
    with connect(fake_providers) as sock:
        sock.sendall(post("/openai/v1/chat/completions", {**CHAT, "stream": True}))
    time.sleep(0.3)
    url = fake_providers.base_url("openai") + "/chat/completions"
    assert httpx.post(url, json=CHAT, headers={"Authorization": "Bearer k"}).status_code == 200
    assert fake_providers.errors == [] and len(fake_providers.requests) == 2


def test_stop_cuts_open_connections_and_start_again_serves() -> None:
    fake = FakeProviders(latency=5.0)
    fake.start()
    sock = connect(fake)
    sock.sendall(post("/openai/v1/chat/completions", CHAT))
    time.sleep(0.1)
    started = time.perf_counter()
    fake.stop()
    assert time.perf_counter() - started < 2
    assert closed_by_peer(sock)
    sock.close()
    with pytest.raises(RuntimeError, match="not running"):
        _ = fake.url
    fake.stop()  # twice is harmless
    fake.latency = 0.0
    with fake:
        url = fake.base_url("openai") + "/chat/completions"
        assert httpx.post(url, json=CHAT, headers={"Authorization": "Bearer k"}).is_success


def test_a_port_in_use_fails_in_start() -> None:
    with FakeProviders() as first:
        port = int(first.url.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            FakeProviders(port=port).start()
