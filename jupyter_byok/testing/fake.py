"""Loopback fake providers: one real HTTP/1.1 server on 127.0.0.1 speaking every wire format.

Invariant: nothing here reaches past 127.0.0.1. The server runs in a background thread
(stdlib ``ThreadingHTTPServer``, keep-alive, chunked streaming), so sync tests, async code
and other processes can all call it. Each provider lives under its own mount point whose
URL has the same meaning as the real provider's base URL (``/openai/v1`` like
``https://api.openai.com/v1``; ``/anthropic`` like ``https://api.anthropic.com``), so pointing
``JUPYTER_BYOK_<PROVIDER>_BASE_URL`` at it is all a user needs (see :meth:`FakeProviders.env`).
Unprefixed paths work too and are routed by path and auth headers.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .exchange import OTHER_FAULTS, STREAM_FAULTS, Drop, Exchange, Fault, RecordedRequest, send_json
from .wire import PROVIDERS, UsagePlan

__all__ = ["FakeProviders", "Fault", "RecordedRequest"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True
    fake: FakeProviders

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (a cancelled call, a test that drops a stream)
        # is part of the job; anything else still gets the usual report.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet by design
        pass

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    def do_POST(self) -> None:
        self.server.fake._handle(self)


class FakeProviders:
    """The fake providers. Use as a context manager, or :meth:`start` / :meth:`stop`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency: float = 0.0) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fake providers listen on loopback only")
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0
        self.default_latency = latency
        self.reset()

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeProviders:
        if self._server is None:
            server = _Server((self._host, self._port), _Handler)
            server.fake = self
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name="byok-fake-providers",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

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

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake providers are not running: call start()")
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}"

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
        JSON body). Options: ``retry_after``,
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

    # -- request handling (server threads) ---------------------------------------------
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

    def _handle(self, h: _Handler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        provider, rest = _route(parts.path, headers)
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        record = RecordedRequest(
            provider, h.command, parts.path, parse_qs(parts.query), headers, body, time.time()
        )
        with self._lock:
            self.requests.append(record)
            plan = self._plans.get(provider, UsagePlan())
            latency = self._latency.get(provider, self.latency)
        try:
            if provider == "":
                self._send_json(h, 404, {"error": {"message": f"no route for {parts.path}"}})
                return
            Exchange(self, h, provider, rest, record, plan, latency).run()
        except Drop:
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
        except Exception as exc:  # a bug in the fake: say so loudly, in the answer and here
            self.errors.append(f"{type(exc).__name__}: {exc}")
            h.close_connection = True
            try:
                self._send_json(h, 599, {"error": {"message": f"fake provider bug: {exc!r}"}})
            except OSError:
                pass

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
