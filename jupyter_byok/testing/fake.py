"""Loopback fake providers: one real HTTP/1.1 server on 127.0.0.1 speaking every wire format.

Invariant: nothing here reaches past 127.0.0.1. The server is an asyncio event loop in one
background thread (keep-alive, pipelining, chunked streaming), so sync tests, async code and
other processes can all call it, and hundreds of concurrent slow streams cost one sleeping
timer each rather than a thread each. Each provider lives under its own mount point whose
URL has the same meaning as the real provider's base URL (``/openai/v1`` like
``https://api.openai.com/v1``; ``/anthropic`` like ``https://api.anthropic.com``), so pointing
``JUPYTER_BYOK_<PROVIDER>_BASE_URL`` at it is all a user needs (see :meth:`FakeProviders.env`).
Unprefixed paths work too and are routed by path and auth headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .abuse import ABUSE_FAULTS, abuse
from .batches import FakeBatches
from .exchange import OTHER_FAULTS, STREAM_FAULTS, Drop, Exchange, Fault, RecordedRequest, send_json
from .wire import PROVIDERS, UsagePlan

__all__ = ["FakeProviders", "Fault", "RecordedRequest"]

# What the stdlib server said, so that answers stay byte-for-byte what they were.
_SERVER = f"{BaseHTTPRequestHandler.server_version} {BaseHTTPRequestHandler.sys_version}"
_REASONS = {code: short for code, (short, _) in BaseHTTPRequestHandler.responses.items()}
_HEAD_END = re.compile(rb"\n\r?\n")  # the blank line after the headers (CRLF or bare LF)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"HTTP/(\d)\.(\d)")
_MAX_HEAD = 65536 + 100 * 8192  # request line and header limits as the stdlib server's
_MAX_HEADERS = 100
_BACKLOG = 1024  # hundreds of clients may connect at once
_MAX_PIPELINED = 32  # requests read ahead on one connection before it stops reading


@dataclass
class _Request:
    command: str
    path: str
    version: str
    headers: dict[str, str]  # lower-cased names, the last of repeated headers wins
    length: int
    close: bool  # the client asked to close after this answer (or spoke HTTP/1.0)
    expect_continue: bool
    body: bytes = b""


class _Refusal(Exception):
    """A request the server cannot parse: answered with ``status``, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _Handler:
    """The part of ``BaseHTTPRequestHandler`` an :class:`Exchange` writes through.

    Writes collect here and go to the asyncio transport in one ``transport.write`` when the
    exchange is over (or hangs up), so a whole answer costs one send; the bytes on the wire
    are the same as when every frame was sent by itself.
    """

    protocol_version = "HTTP/1.1"

    def __init__(self, transport: asyncio.Transport, request: _Request) -> None:
        self.transport = transport
        self.command, self.path = request.command, request.path
        self.request_version = request.version
        self.headers = request.headers
        self.close_connection = request.close
        self.wfile = self
        self._out: list[bytes] = []

    def send_response(self, code: int, message: str | None = None) -> None:
        if message is None:
            message = _REASONS.get(code, "")
        self._out.append(f"{self.protocol_version} {code} {message}\r\n".encode("latin-1"))
        self.send_header("Server", _SERVER)
        self.send_header("Date", formatdate(usegmt=True))

    def send_header(self, keyword: str, value: str) -> None:
        self._out.append(f"{keyword}: {value}\r\n".encode("latin-1"))
        if keyword.lower() == "connection":
            if value.lower() == "close":
                self.close_connection = True
            elif value.lower() == "keep-alive":
                self.close_connection = False

    def end_headers(self) -> None:
        self._out.append(b"\r\n")

    def write(self, data: bytes) -> int:
        self._out.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def discard(self) -> None:
        """Forget what was written and not yet sent."""
        self._out.clear()

    def send(self) -> None:
        """Hand everything written so far to the transport."""
        out, self._out = b"".join(self._out), []
        if out and not self.transport.is_closing():
            self.transport.write(out)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests as bytes arrive, answers them in order."""

    def __init__(self, fake: FakeProviders, live: set[_Connection]) -> None:
        self.fake, self.live = fake, live
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.head: _Request | None = None  # parsed, waiting for the rest of its body
        self.pending: deque[_Request | _Refusal] = deque()
        self.reading = True  # False after a refusal or a `Connection: close` request
        self.paused = False
        self.eof = False
        self.busy = False
        self.arrived = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.live.add(self)
        self.task = asyncio.get_running_loop().create_task(self.serve())

    def data_received(self, data: bytes) -> None:
        if not self.reading:
            return
        self.buffer += data
        try:
            self.parse()
        except _Refusal as refusal:
            self.reading = False
            self.buffer.clear()
            self.pending.append(refusal)
        if len(self.pending) >= _MAX_PIPELINED and not self.paused:
            self.paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self.arrived.set()

    def eof_received(self) -> bool:
        self.eof = True
        self.arrived.set()
        return True  # stay half-open: answer what was asked, then close

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.live.discard(self)
        self.writable.set()
        if self.task is not None:
            self.task.cancel()

    # -- requests --------------------------------------------------------------------
    def parse(self) -> None:
        """Move every complete request in the buffer to ``pending``."""
        buf = self.buffer
        while self.reading:
            if self.head is None:
                blank = len(buf) - len(buf.lstrip(b"\r\n"))  # allowed before a request line
                if blank:
                    del buf[:blank]
                match = _HEAD_END.search(buf)
                if match is None:
                    if len(buf) > _MAX_HEAD:
                        raise _Refusal(431, "Request header fields too large")
                    return
                if match.start() > _MAX_HEAD:
                    raise _Refusal(431, "Request header fields too large")
                head = bytes(buf[: match.start()])
                del buf[: match.end()]
                self.head = _parse_head(head)
                if (
                    self.head.expect_continue
                    and len(buf) < self.head.length
                    and not self.pending
                    and not self.busy
                ):
                    assert self.transport is not None
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request = self.head
            if len(buf) < request.length:
                return
            request.body = bytes(buf[: request.length])
            del buf[: request.length]
            self.head = None
            self.pending.append(request)
            if request.close:
                self.reading = False

    async def serve(self) -> None:
        transport = self.transport
        assert transport is not None
        try:
            while True:
                if not self.pending:
                    if self.eof or not self.reading:
                        break
                    self.arrived.clear()
                    await self.arrived.wait()
                    continue
                item = self.pending.popleft()
                if self.paused and len(self.pending) < _MAX_PIPELINED // 4:
                    self.paused = False
                    transport.resume_reading()
                if isinstance(item, _Refusal):
                    _refuse(transport, item)
                    break
                self.busy = True
                keep_alive = await self.fake._handle(transport, item)
                self.busy = False
                if not keep_alive or transport.is_closing():
                    break
                await self.writable.wait()
        except Exception as exc:  # a bug in the server itself: report it, hang up
            self.fake.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            transport.close()  # sends what is buffered, then FIN


def _parse_head(head: bytes) -> _Request:
    """The request line and headers (the blank line already cut off), or a _Refusal."""
    lines = [line.rstrip("\r") for line in head.decode("latin-1").split("\n")]
    words = lines[0].split()
    if len(words) != 3:
        raise _Refusal(400, f"Bad request syntax ({lines[0]!r})")
    command, path, version = words
    found = _VERSION.fullmatch(version)
    if not _TOKEN.fullmatch(command) or found is None:
        raise _Refusal(400, f"Bad request syntax ({lines[0]!r})")
    major, minor = int(found[1]), int(found[2])
    if major != 1:
        raise _Refusal(505, f"Invalid HTTP version ({version})")
    if command not in ("GET", "POST"):
        raise _Refusal(501, f"Unsupported method ({command!r})")
    if path.startswith("//"):
        path = "/" + path.lstrip("/")  # as the stdlib server does
    fields: list[list[str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):  # an obsolete folded continuation line
            if not fields:
                raise _Refusal(400, "Bad header continuation")
            fields[-1][1] += " " + line.strip(" \t")
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise _Refusal(400, f"Bad header line ({line!r})")
        fields.append([name, value.lstrip(" \t")])
    if len(fields) > _MAX_HEADERS:
        raise _Refusal(431, "Too many headers")
    headers = {name.lower(): value for name, value in fields}
    lengths = [value.strip() for name, value in fields if name.lower() == "content-length"]
    if any(not n.isdigit() or not n.isascii() for n in lengths) or len(set(lengths)) > 1:
        raise _Refusal(400, "Bad Content-Length")
    if "transfer-encoding" in headers:
        raise _Refusal(501, "Transfer-Encoding in requests is not supported: send Content-Length")
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    http11 = (major, minor) >= (1, 1)
    close = "close" in tokens or (not http11 and "keep-alive" not in tokens)
    expect = http11 and headers.get("expect", "").lower() == "100-continue"
    length = int(lengths[0]) if lengths else 0
    return _Request(command, path, version, headers, length, close, expect)


def _refuse(transport: asyncio.Transport, refusal: _Refusal) -> None:
    data = json.dumps({"error": {"message": refusal.message}}, separators=(",", ":")).encode()
    reason = _REASONS.get(refusal.status, "")
    head = (
        f"HTTP/1.1 {refusal.status} {reason}\r\n"
        f"Server: {_SERVER}\r\nDate: {formatdate(usegmt=True)}\r\n"
        "Connection: close\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n\r\n"
    )
    if not transport.is_closing():
        transport.write(head.encode("latin-1") + data)


class FakeProviders:
    """The fake providers. Use as a context manager, or :meth:`start` / :meth:`stop`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency: float = 0.0) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fake providers listen on loopback only")
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._lifecycle = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None
        self._counter = 0
        self.default_latency = latency
        self.reset()

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeProviders:
        """Listen and serve in a background thread; returns once the port is bound."""
        with self._lifecycle:
            if self._loop is not None:
                return self
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            sock = socket.create_server((self._host, self._port), family=family, backlog=_BACKLOG)
            sock.setblocking(False)
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            failed: list[BaseException] = []
            thread = threading.Thread(
                target=self._serve_forever,
                args=(loop, sock, ready, failed),
                name="byok-fake-providers",
                daemon=True,
            )
            thread.start()
            ready.wait()
            if failed:
                thread.join()
                sock.close()
                raise failed[0]
            host, port = sock.getsockname()[:2]
            self._loop, self._thread, self._address = loop, thread, (host, port)
        return self

    def stop(self) -> None:
        """Stop serving: every open connection is cut, the listening socket closed."""
        with self._lifecycle:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = self._address = None
            if loop is None or thread is None:
                return
            with contextlib.suppress(RuntimeError):  # the loop already stopped
                loop.call_soon_threadsafe(loop.stop)
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def _serve_forever(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        ready: threading.Event,
        failed: list[BaseException],
    ) -> None:
        asyncio.set_event_loop(loop)
        live: set[_Connection] = set()
        try:
            server = loop.run_until_complete(
                loop.create_server(lambda: _Connection(self, live), sock=sock, backlog=_BACKLOG)
            )
        except BaseException as exc:
            failed.append(exc)
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()  # closes the listening socket
            for connection in list(live):
                if connection.transport is not None:
                    connection.transport.abort()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def __enter__(self) -> FakeProviders:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configuration ---------------------------------------------------------------
    def reset(self) -> None:
        """Forget requests, faults, keys, latency and usage plans (between tests)."""
        with self._lock:
            self.requests: list[RecordedRequest] = []
            #: exceptions raised inside the fake itself (tests assert it stays empty)
            self.errors: list[str] = []
            self._faults: dict[str, list[Fault]] = {p: [] for p in PROVIDERS}
            self._keys: dict[str, set[str] | None] = dict.fromkeys(PROVIDERS)
            self._latency: dict[str, float] = {}
            self._plans: dict[str, UsagePlan] = {}
            self.latency = self.default_latency
            #: the batch endpoints' state and knobs (timing, hold, failed or expired items)
            self.batches = FakeBatches()

    @property
    def url(self) -> str:
        address = self._address
        if address is None:
            raise RuntimeError("the fake providers are not running: call start()")
        host, port = address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def base_url(self, provider: str) -> str:
        """The base URL with the real provider's meaning (OpenAI's and xAI's end in /v1)."""
        mounts = {"openai": "/openai/v1", "xai": "/xai/v1", "compat": "/compat/v1"}
        if provider not in PROVIDERS:
            raise ValueError(f"unknown fake provider {provider!r}: use one of {PROVIDERS}")
        return self.url + mounts.get(provider, "/" + provider)

    def env(self) -> dict[str, str]:
        """``JUPYTER_BYOK_<PROVIDER>_BASE_URL`` for every built-in provider."""
        names = ("openai", "anthropic", "gemini", "xai", "tavily")
        return {f"JUPYTER_BYOK_{p.upper()}_BASE_URL": self.base_url(p) for p in names}

    def set_keys(self, provider: str, *keys: str) -> None:
        """Accept only these keys for ``provider`` (by default any non-empty key passes)."""
        with self._lock:
            self._keys[provider] = set(keys) if keys else None

    def set_latency(self, provider: str, seconds: float) -> None:
        with self._lock:
            self._latency[provider] = seconds

    def set_usage(self, provider: str, **plan: Any) -> None:
        """Report extra usage: ``cached``, ``cache_write_5m``, ``cache_write_1h``,
        ``reasoning``, and for xAI ``fold_reasoning`` and ``ticks_per_token``."""
        with self._lock:
            self._plans[provider] = UsagePlan(**plan)

    def add_fault(
        self, provider: str, kind: str, times: int = 1, *, endpoint: str = "any", **opts: Any
    ) -> None:
        """Answer the next ``times`` requests to ``provider`` with fault ``kind``.

        Kinds: ``rate_limit``, ``quota``, ``server_error`` (500), ``unavailable`` (503),
        ``overloaded`` (Anthropic 529, others 503), ``timeout_status`` (408), ``conflict``
        (409), ``auth``, ``permission``, ``not_found``, ``bad_request``, ``drop_connection``,
        ``slow_first_byte`` (``delay``), and for streams ``drop_stream``, ``malformed_chunk``
        and ``stream_error`` (``after`` = frames sent first; Gemini ``raw=True`` sends a bare
        JSON body). Abusive answers (:mod:`.abuse`): ``huge_body``, ``endless_stream``,
        ``drip``, ``slow_headers``, ``hang``, ``truncated_body``, ``redirect``,
        ``wrong_shape``. Options: ``retry_after``,
        ``retry_after_ms``, ``should_retry`` (x-should-retry), ``headers``, ``status``,
        ``message``, ``delay``, ``after``.
        """
        if provider not in PROVIDERS:
            raise ValueError(f"unknown fake provider {provider!r}: use one of {PROVIDERS}")
        if kind not in ("auth", *STREAM_FAULTS, *OTHER_FAULTS) and not _known_kind(kind):
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._faults[provider].append(Fault(kind, times, opts, endpoint))

    def requests_for(self, provider: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.provider == provider]

    # -- request handling (the server's event loop) ------------------------------------
    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._counter += 1
            return f"{prefix}{self._counter:08d}"

    def _take_fault(self, provider: str, endpoint: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(provider, [])
            for fault in queue:
                if fault.endpoint in ("any", endpoint):
                    fault.times -= 1
                    if fault.times <= 0:
                        queue.remove(fault)
                    return fault
        return None

    async def _handle(self, transport: asyncio.Transport, request: _Request) -> bool:
        """Record and answer one request; whether the connection stays open for the next."""
        h = _Handler(transport, request)
        parts = urlsplit(request.path)
        headers = request.headers
        raw = request.body
        provider, rest = _route(parts.path, headers)
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        record = RecordedRequest(
            provider, request.command, parts.path, parse_qs(parts.query), headers, body, time.time()
        )
        with self._lock:
            self.requests.append(record)
            plan = self._plans.get(provider, UsagePlan())
            latency = self._latency.get(provider, self.latency)
        try:
            if provider == "":
                self._send_json(h, 404, {"error": {"message": f"no route for {parts.path}"}})
            else:
                exchange = Exchange(self, h, provider, rest, record, plan, latency)
                delay = exchange.begin()
                if delay > 0:
                    await asyncio.sleep(delay)
                if exchange.fault is not None and exchange.fault.kind in ABUSE_FAULTS:
                    await abuse(exchange, transport)  # writes by itself, then hangs up
                    return False
                exchange.respond()
        except Drop:  # what was written goes out, then the connection is cut (mid-body)
            h.close_connection = True
        except Exception as exc:  # a bug in the fake: say so loudly, in the answer and here
            self.errors.append(f"{type(exc).__name__}: {exc}")
            h.close_connection = True
            h.discard()
            self._send_json(h, 599, {"error": {"message": f"fake provider bug: {exc!r}"}})
        h.send()
        return not h.close_connection

    @staticmethod
    def _send_json(
        h: _Handler, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        send_json(h, status, body, headers)


def _known_kind(kind: str) -> bool:
    from .wire import KIND_STATUS

    return kind in KIND_STATUS


def _route(path: str, headers: dict[str, str]) -> tuple[str, str]:
    """(provider, path below its mount). Unprefixed paths are told apart by shape and auth."""
    for mount in ("openai", "xai", "compat", "anthropic", "gemini", "tavily"):
        prefix = "/" + mount
        if path == prefix or path.startswith(prefix + "/"):
            return mount, path[len(prefix) :] or "/"
    if path.startswith(("/v1beta/", "/v1alpha/")) or ":generateContent" in path:
        return "gemini", path
    if path in ("/search", "/usage", "/extract"):
        return "tavily", path
    if "anthropic-version" in headers or "x-api-key" in headers or path.startswith("/v1/messages"):
        return "anthropic", path
    if path.startswith("/v1/"):
        bearer = headers.get("authorization", "")
        return ("xai" if bearer.startswith("Bearer xai-") else "openai"), path
    return "", path
