"""What every wire format shares: SSE framing, the retry policy, and HTTP error mapping.

Invariants:

* Errors are translated in one place (:func:`error_from_response`, :func:`error_from_exception`):
  every provider failure becomes a :class:`~jupyter_byok.errors.ProviderError` subclass whose
  one-line message names the provider, the HTTP status, the provider's own message and the
  request id, and never the key or the request body.
* Nothing is retried that cannot succeed on a retry: 400, 401, 403, 404 and exhausted
  quota (429 ``insufficient_quota``, 402, Tavily 432/433, ...) are never retried, whatever
  ``x-should-retry`` says.
* Nothing is retried that the provider may have billed: a redirect is never followed, and
  an answer that began (2xx status line) and then broke off, went over the size cap or did
  not parse is an error, not retried.
* Every call is bounded (:class:`Limits`): connect and idle-read timeouts, a deadline for
  the whole call that the retries count against, and caps on the bytes of an answer.
"""

from __future__ import annotations

import asyncio
import codecs
import datetime as dt
import email.utils
import json
import math
import os
import random
import sys
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx

if TYPE_CHECKING:
    from typing import TypeAlias

    import httpx2

    #: dispatch takes an httpx client, or an httpx2 one (same API, faster connection pool)
    AsyncHTTPClient: TypeAlias = httpx.AsyncClient | httpx2.AsyncClient

from ..errors import (
    AuthenticationError,
    BadRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    ResponseTooLargeError,
    StreamError,
)
from ..types import Attempt, Message, ProviderResult, StreamEvent, Usage

__all__ = [
    "AsyncHTTPClient",
    "CallResult",
    "FinalEvent",
    "Limits",
    "RetryPolicy",
    "SSEDecoder",
    "SSEEvent",
    "StreamParser",
    "WireRequest",
    "default_limits",
    "error_from_exception",
    "error_from_response",
    "is_retryable",
    "iter_lines",
    "read_body",
    "retry_after_seconds",
    "send_request",
]

NEVER_RETRY = frozenset({400, 401, 403, 404})
KIB = 1024
MIB = 1024 * KIB
#: the largest per-call ``timeout=`` accepted (seconds)
MAX_TIMEOUT_S = 3600.0


# -- limits ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Caps and timeouts of one provider call (docs/security.md, "Limits").

    Defaults can be changed with the environment variables named below (read on each call,
    so a server picks up a change without a restart), and the deadline per call with
    ``timeout=`` (seconds).
    """

    #: ``JUPYTER_BYOK_TIMEOUT``: the whole call ends by then: every attempt, the waits
    #: between them, reading the answer, and for a stream the whole stream
    deadline_s: float = 600.0
    #: ``JUPYTER_BYOK_CONNECT_TIMEOUT``: opening the connection (TCP and TLS)
    connect_s: float = 10.0
    #: ``JUPYTER_BYOK_READ_TIMEOUT``: the longest silence (no byte) inside a stream, and the
    #: longest a stream may take to complete one event (a provider dripping bytes)
    idle_read_s: float = 300.0
    #: ``JUPYTER_BYOK_MAX_RESPONSE_BYTES``: total (decoded) bytes of an answer or a stream
    max_response_bytes: int = 32 * MIB
    #: ``JUPYTER_BYOK_MAX_EVENT_BYTES``: one server-sent event of a stream
    max_event_bytes: int = 1 * MIB
    #: answers up to this size are parsed on the event loop; larger ones in a short-lived
    #: worker process (a 30 MB JSON body can take seconds and gigabytes to parse)
    parse_inline_bytes: int = 512 * KIB

    def for_call(self, timeout: Any) -> Limits:
        """These limits with the call's own ``timeout=`` (seconds) as its deadline."""
        if timeout is None:
            return self
        return replace(self, deadline_s=check_timeout(timeout))


def check_timeout(value: Any, name: str = "timeout") -> float:
    """A per-call timeout in seconds: a finite number in (0, MAX_TIMEOUT_S]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value <= MAX_TIMEOUT_S
    ):
        raise BadRequestError(
            f"{name} must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}, "
            f"not {value!r}"
        )
    return float(value)


_ENV_LIMITS = (
    ("JUPYTER_BYOK_TIMEOUT", "deadline_s", float),
    ("JUPYTER_BYOK_CONNECT_TIMEOUT", "connect_s", float),
    ("JUPYTER_BYOK_READ_TIMEOUT", "idle_read_s", float),
    ("JUPYTER_BYOK_MAX_RESPONSE_BYTES", "max_response_bytes", int),
    ("JUPYTER_BYOK_MAX_EVENT_BYTES", "max_event_bytes", int),
)
_ENV_NAMES = tuple(name for name, _, _ in _ENV_LIMITS)
_limits_cache: tuple[tuple[str | None, ...], Limits] | None = None


def default_limits() -> Limits:
    """The limits from the environment (the defaults of :class:`Limits` where unset)."""
    global _limits_cache
    get = os.environ.get
    key = tuple(get(name) for name in _ENV_NAMES)
    cached = _limits_cache
    if cached is not None and cached[0] == key:
        return cached[1]
    values: dict[str, Any] = {}
    for (name, attr, kind), raw in zip(_ENV_LIMITS, key, strict=True):
        if raw is None or not raw.strip():
            continue
        try:
            value = kind(raw)
        except ValueError:
            value = -1
        if not (math.isfinite(value) and value > 0):
            from ..errors import ConfigError

            raise ConfigError(f"{name}={raw!r} is not a positive number: fix or unset it")
        values[attr] = value
    limits = Limits(**values)
    _limits_cache = (key, limits)
    return limits


# -- values --------------------------------------------------------------------------------


@dataclass
class CallResult(ProviderResult):
    """A :class:`ProviderResult` plus what the ledger wants from the HTTP exchange."""

    request_id: str = ""
    latency_s: float = 0.0
    attempts: int = 1


@dataclass
class FinalEvent(StreamEvent):
    """The last event of a stream (``done=True``), with the request id and timings."""

    request_id: str = ""
    latency_s: float = 0.0
    ttft_s: float | None = None
    attempts: int = 1


@dataclass
class AttemptRecord(Attempt):
    """An :class:`Attempt` that also carries the provider's request id (header)."""

    request_id: str = ""
    provider: str = ""


@dataclass
class WireRequest:
    """One HTTP request before the key is added: never holds a secret."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    params: dict[str, str] | None = None


# -- the wire-format protocol ----------------------------------------------------------------


class StreamParser(Protocol):
    def feed(self, event: SSEEvent) -> list[StreamEvent]: ...

    def partial_usage(self) -> Usage | None: ...

    def finish(self) -> StreamEvent: ...


class Wire(Protocol):
    """What a wire module (``openai``, ``anthropic``, ``gemini``) provides to dispatch."""

    def auth_headers(self, provider: str, key: Any) -> dict[str, str]: ...

    def chat_request(
        self,
        provider: str,
        base_url: str,
        model: str,
        messages: list[Message],
        params: dict[str, Any],
        *,
        stream: bool,
    ) -> WireRequest: ...

    def parse_chat(self, provider: str, model: str, data: Any) -> ProviderResult: ...

    def stream_parser(self, provider: str, model: str) -> StreamParser: ...

    def models_request(self, provider: str, base_url: str) -> WireRequest: ...

    def parse_models(self, data: Any) -> tuple[list[str], WireRequest | None]: ...


# -- SSE ----------------------------------------------------------------------------------


@dataclass
class SSEEvent:
    event: str
    data: str

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError:
            raise StreamError(
                f"the stream carried a malformed chunk ({self.data[:40]!r}...): try again"
            ) from None


class SSEDecoder:
    """Server-sent events from lines (CRLF, LF and CR framing all split into lines upstream).

    Lines that are not SSE fields (Gemini may send a plain JSON error body after the
    stream started) are kept in :attr:`stray` for the caller to report.
    """

    __slots__ = ("_data", "_event", "stray")

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.stray: list[str] = []

    def feed(self, line: str) -> SSEEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data and not self._event:
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if not sep:
            self.stray.append(line)
            return None
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name not in ("id", "retry"):
            self.stray.append(line)
        return None

    def flush(self) -> SSEEvent | None:
        """An event left without its blank line when the stream ended."""
        return self.feed("") if self._data else None


def iter_sse_text(text: str) -> list[SSEEvent]:
    """Every event in a complete SSE body (for tests and small bodies)."""
    decoder = SSEDecoder()
    events = [e for line in text.splitlines() if (e := decoder.feed(line)) is not None]
    last = decoder.flush()
    return [*events, last] if last else events


# -- retries ---------------------------------------------------------------------------------


def retry_after_seconds(
    headers: Mapping[str, str] | None, now: dt.datetime | None = None
) -> float | None:
    """The delay the server asks for: ``retry-after-ms``, then ``retry-after`` as seconds or
    an HTTP date. ``None`` when absent, unparsable, zero or in the past (the SDKs' rule)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = 0.0
        if value > 0:
            return value
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        value = (when - (now or dt.datetime.now(dt.timezone.utc))).total_seconds()
    return value if value > 0 else None


def is_retryable(error: ProviderError, headers: Mapping[str, str] | None = None) -> bool:
    """Whether a failed attempt may be retried (the count is the policy's business)."""
    status = error.status_code
    if isinstance(error, (QuotaExceededError, StreamError, ResponseTooLargeError)):
        return False
    if status is not None and status < 400:
        return False  # a redirect, or an answer that began and then failed (may be billed)
    if status in NEVER_RETRY or status == 402:
        return False
    should = (headers or {}).get("x-should-retry", "").strip().lower()
    if should == "false":
        return False
    if should == "true":
        return True
    if status is None:
        return isinstance(error, (ProviderConnectionError, ProviderTimeoutError))
    return status in (408, 409, 429) or status >= 500


@dataclass(frozen=True)
class RetryPolicy:
    """SDK-like retries: ``max_retries`` after the first attempt, exponential backoff
    ``min(initial_delay * 2**n, max_delay)`` with jitter, and the server's ``retry-after``
    honoured up to ``max_retry_after`` seconds (a longer wait is surfaced as the error,
    with ``retry_after`` set, rather than blocking a notebook for minutes)."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    retry_timeouts: bool = True
    #: "full": uniform(0, backoff) (AWS full jitter); "sdk": backoff * (1 - 0.25 * random())
    jitter: Literal["full", "sdk"] = "full"

    def backoff(self, retries_done: int, rng: random.Random | None = None) -> float:
        base = min(self.initial_delay * 2.0**retries_done, self.max_delay)
        r = (rng or random).random()
        return base * r if self.jitter == "full" else base * (1 - 0.25 * r)

    def delay(
        self,
        retries_done: int,
        error: ProviderError,
        headers: Mapping[str, str] | None = None,
        now: dt.datetime | None = None,
    ) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up now."""
        if retries_done >= self.max_retries or not is_retryable(error, headers):
            return None
        if isinstance(error, ProviderTimeoutError) and not self.retry_timeouts:
            return None
        asked = retry_after_seconds(headers, now)
        if asked is not None:
            if asked > self.max_retry_after:
                error.retry_after = asked
                return None
            return asked
        return self.backoff(retries_done)


# -- errors --------------------------------------------------------------------------------

_HINTS: dict[type[ProviderError], str] = {
    AuthenticationError: "the key was refused: check it with `jupyter byok keys verify {p}` "
    "or store a new one with `jupyter byok keys set {p}`",
    BadRequestError: "the provider refused the request: check the model id and parameters",
    RateLimitError: "rate limited: wait a little, lower the concurrency, or raise the limit "
    "with {p}",
    QuotaExceededError: "out of credit or over a spending limit: add credit or raise the "
    "limit in the {p} console (not retried)",
    ProviderServerError: "the provider is failing or overloaded: try again later",
    ProviderTimeoutError: "no answer in time: try again or raise the timeout (the call may "
    "still be billed)",
    ProviderConnectionError: "could not reach {p}: check the network, the proxy settings "
    "or JUPYTER_BYOK_{P}_BASE_URL",
    ProviderError: "try again later",
}


def _hint(cls: type[ProviderError], provider: str) -> str:
    for klass in cls.__mro__:
        if klass in _HINTS:
            return _HINTS[klass].format(p=provider, P=provider.upper())
    return ""


def _provider_message(body: Any, text: str) -> tuple[str, str | None, str | None]:
    """(message, error type/code, body request id) from any provider's error body."""
    if isinstance(body, dict):
        err = body.get("error")
        rid = body.get("request_id") if isinstance(body.get("request_id"), str) else None
        if isinstance(err, dict):  # OpenAI, Anthropic, Gemini
            etype = err.get("code") if isinstance(err.get("code"), str) else None
            etype = etype or err.get("type") or err.get("status")
            if "details" in err and isinstance(err["details"], list):
                for detail in err["details"]:
                    if isinstance(detail, dict) and detail.get("reason"):
                        etype = str(detail["reason"])
            return str(err.get("message") or ""), etype and str(etype), rid
        if isinstance(err, str):  # xAI: {"code": "...", "error": "..."}
            code = body.get("code")
            return err, str(code) if code else None, rid
        detail = body.get("detail")
        if isinstance(detail, dict):  # Tavily
            return str(detail.get("error") or detail), None, rid
        if isinstance(detail, str):
            return detail, None, rid
        if isinstance(body.get("message"), str):
            return body["message"], None, rid
    return text[:300], None, None


def _is_quota(provider: str, status: int, body: Any, message: str, etype: str | None) -> bool:
    if status in (402, 432, 433):
        return True
    low = message.lower()
    if etype in ("insufficient_quota", "billing_error"):
        return True
    if (
        "credit balance is too low" in low
        or "spending limit" in low
        or "used all available credits" in low
    ):
        return True
    if provider == "gemini" and status == 429 and isinstance(body, dict):
        details = (body.get("error") or {}).get("details") or []
        for detail in details:
            for violation in detail.get("violations", []) if isinstance(detail, dict) else []:
                if "PerDay" in str(violation.get("quotaId", "")):
                    return True
    return False


def _error_class(
    provider: str, status: int, body: Any, message: str, etype: str | None
) -> type[ProviderError]:
    if _is_quota(provider, status, body, message, etype):
        return QuotaExceededError
    if status in (401, 403):
        return AuthenticationError
    if status == 400 and (
        etype == "API_KEY_INVALID"
        or ("api key" in message.lower() and "invalid" in message.lower())
        or "incorrect api key" in message.lower()
    ):
        return AuthenticationError  # Gemini and xAI refuse keys with a 400
    if status == 429:
        return RateLimitError
    if status >= 500 or status in (408, 409):
        return ProviderServerError
    return BadRequestError


def request_id_from(headers: Mapping[str, str]) -> str:
    return (
        headers.get("x-request-id")
        or headers.get("request-id")
        or headers.get("x-goog-request-id")
        or ""
    )


def error_from_response(
    provider: str, status: int, headers: Mapping[str, str], content: bytes
) -> ProviderError:
    """The :class:`ProviderError` for an HTTP error answer (the one place that maps them)."""
    if 300 <= status < 400:  # redirects are never followed: they could lead the key away
        rid = request_id_from(headers)
        where = f" (request id {rid})" if rid else ""
        to = (headers.get("location") or "").split("?")[0][:200]
        return ProviderError(
            f"{provider} answered {status}, a redirect{f' to {to}' if to else ''}{where}, which "
            f"is not followed and not retried: check the base URL "
            f"(JUPYTER_BYOK_{provider.upper()}_BASE_URL or the endpoint's base_url)",
            provider=provider,
            status_code=status,
            request_id=rid or None,
            error_type="redirect",
        )
    text = content.decode("utf-8", "replace")
    try:
        body: Any = json.loads(text) if text.strip() else None
    except ValueError:
        body = None
    message, etype, body_rid = _provider_message(body, text)
    rid = request_id_from(headers) or body_rid or ""
    cls = _error_class(provider, status, body, message, etype)
    kind = f" {etype}" if etype else ""
    where = f" (request id {rid})" if rid else ""
    said = f": {message.rstrip('.')}" if message else ""
    line = f"{provider} answered {status}{kind}{said}{where}; {_hint(cls, provider)}"
    return cls(
        line,
        provider=provider,
        status_code=status,
        request_id=rid or None,
        error_type=etype,
        retry_after=retry_after_seconds(headers),
    )


def _httpx_kinds() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeout, transport) exception classes of httpx, and of httpx2 when it is in use."""
    timeouts: list[type[BaseException]] = [httpx.TimeoutException]
    transport: list[type[BaseException]] = [httpx.TransportError, httpx.StreamError]
    other = sys.modules.get("httpx2")
    if other is not None:
        timeouts.append(other.TimeoutException)
        transport += [other.TransportError, other.StreamError]
    return tuple(timeouts), tuple(transport)


def transport_errors() -> tuple[type[BaseException], ...]:
    timeouts, transport = _httpx_kinds()
    return (*timeouts, *transport)


def error_from_exception(provider: str, exc: BaseException, url: str = "") -> ProviderError:
    """The :class:`ProviderError` for an httpx (or httpx2) failure to get an answer."""
    timeouts, _ = _httpx_kinds()
    name = type(exc).__name__
    if isinstance(exc, timeouts):
        connect = "Connect" in name or "Pool" in name
        what = "connecting to" if connect else "waiting for"
        cls: type[ProviderError] = ProviderConnectionError if connect else ProviderTimeoutError
        if connect:
            line = (
                f"timed out {what} {provider} at {url}; {_hint(ProviderConnectionError, provider)}"
            )
        else:
            line = f"timed out {what} {provider} ({name}); {_hint(ProviderTimeoutError, provider)}"
        return cls(line, provider=provider, error_type=name)
    detail = str(exc).splitlines()[0] if str(exc) else name
    line = f"{provider} connection failed ({name}: {detail}) at {url}; " + _hint(
        ProviderConnectionError, provider
    )
    return ProviderConnectionError(line, provider=provider, error_type=name)


def make_async_client(
    *, timeout: float = 600.0, connect_timeout: float = 5.0, transport: Any = None
) -> AsyncHTTPClient:
    """A pooled, keep-alive async client for provider calls, honouring HTTP(S)_PROXY and
    SSL_CERT_FILE, chosen by measurement (``benchmarks/bench_dispatch.py``):

    1. httpx with aiohttp's transport (``httpx-aiohttp``) when installed and no proxy is
       configured: httpx's API with aiohttp's connection handling, the fastest under many
       calls in flight;
    2. else httpx2, whose pool does not rescan every connection per request as httpx 0.28's
       does (encode/httpx#3215);
    3. else plain httpx.
    """
    import types
    import urllib.request

    limits_args = {"max_connections": None, "max_keepalive_connections": 256}
    # The aiohttp transport does not read HTTP(S)_PROXY; httpx's own transports do.
    proxied = any(k in ("http", "https", "all") for k in urllib.request.getproxies())
    if transport is None and not proxied:
        try:
            from httpx_aiohttp import AiohttpTransport
        except ImportError:
            pass
        else:
            aio = AiohttpTransport(
                limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256),
                trust_env=True,
            )
            fast = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=connect_timeout),
                follow_redirects=False,
                trust_env=True,
                transport=aio,
            )
            _DIRECT[fast] = _Direct(aio, fast.timeout.as_dict(), dict(fast.headers.items()))
            return fast
    lib: types.ModuleType
    try:
        import httpx2 as lib
    except ImportError:
        lib = httpx
    client: AsyncHTTPClient = lib.AsyncClient(
        timeout=lib.Timeout(timeout, connect=connect_timeout),
        limits=lib.Limits(**limits_args),
        follow_redirects=False,
        trust_env=True,
        transport=transport,
    )
    return client


@dataclass(frozen=True)
class _Direct:
    transport: httpx.AsyncBaseTransport
    timeout: dict[str, Any]
    headers: dict[str, str]


#: clients made by :func:`make_async_client` whose requests may skip the client layer
_DIRECT: weakref.WeakKeyDictionary[Any, _Direct] = weakref.WeakKeyDictionary()
#: parsed provider URLs (immutable; a handful per process)
_URLS: dict[str, httpx.URL] = {}


async def send_request(
    client: AsyncHTTPClient,
    method: str,
    url: str,
    *,
    content: bytes | None,
    headers: dict[str, str],
    params: dict[str, Any] | None = None,
    timeout: Any = None,
    stream: bool = False,
) -> Any:
    """Send one request and return the ``httpx.Response`` (body read unless ``stream``).

    ``timeout``: ``None`` (the client's), a number, or a dict of ``connect``, ``read``,
    ``write`` and ``pool`` seconds (see :func:`attempt_timeouts`).

    A client made by :func:`make_async_client` over the aiohttp transport has nothing for
    the client layer to do (no base URL, auth, cookies, redirects, event hooks or proxy
    mounts), so its requests go straight to the transport through httpx's public
    transport API: measured in ``benchmarks/bench_dispatch.py``, this saves about a
    fifth of a loopback call. Provider APIs need no cookies, and none are kept or sent.
    Any other client (a custom transport, a proxy, httpx2) is used as it is.
    """
    direct = _DIRECT.get(client)
    if direct is None:
        extra: dict[str, Any] = {}
        if timeout is not None:  # as a 4-tuple, which httpx and httpx2 both take
            extra["timeout"] = (
                (timeout["connect"], timeout["read"], timeout["write"], timeout["pool"])
                if isinstance(timeout, dict)
                else timeout
            )
        request: Any = client.build_request(
            method, url, content=content, headers=headers, params=params, **extra
        )
        return await client.send(request, stream=stream)
    if timeout is None:
        limits = direct.timeout
    else:
        limits = timeout if isinstance(timeout, dict) else httpx.Timeout(timeout).as_dict()
    parsed = _URLS.get(url)
    if parsed is None:  # parsing a URL costs more than the rest of building the request
        if len(_URLS) > 256:
            _URLS.clear()
        parsed = _URLS[url] = httpx.URL(url)
    request = httpx.Request(
        method,
        parsed,
        params=params,
        content=content,
        headers={**direct.headers, **{name.lower(): value for name, value in headers.items()}},
        extensions={"timeout": limits},
    )
    response = await direct.transport.handle_async_request(request)
    response.request = request
    if not stream:
        try:
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
    return response


if sys.version_info >= (3, 11):
    timeout_at = asyncio.timeout_at
else:  # pragma: no cover - Python 3.10
    import contextlib

    @contextlib.asynccontextmanager
    async def timeout_at(when: float) -> AsyncIterator[None]:
        """``asyncio.timeout_at`` for Python 3.10: ``TimeoutError`` once the loop's clock
        passes ``when``."""
        task = asyncio.current_task()
        assert task is not None
        fired: list[bool] = []

        def expire() -> None:
            fired.append(True)
            task.cancel()

        handle = asyncio.get_running_loop().call_at(when, expire)
        try:
            yield
        except asyncio.CancelledError:
            if fired:
                raise TimeoutError from None
            raise
        finally:
            handle.cancel()


def deadline_passed(provider: str, limits: Limits) -> ProviderError:
    """No answer began before the call's deadline (the provider may still bill it)."""
    return ProviderTimeoutError(
        f"{provider} did not answer within the call's deadline of {limits.deadline_s:g} s; "
        f"try again, or raise it with timeout= (or JUPYTER_BYOK_TIMEOUT) for long answers "
        "(the call may still be billed)",
        provider=provider,
        error_type="deadline",
    )


def attempt_timeouts(
    limits: Limits, deadline: float, loop: asyncio.AbstractEventLoop, *, stream: bool
) -> dict[str, float]:
    """httpx timeouts for one attempt: what is left before ``deadline`` (the loop's clock)
    bounds each; a stream's reads also stop after ``idle_read_s`` of silence. A non-streamed
    answer may take as long as its deadline to begin (a model thinking)."""
    left = max(deadline - loop.time(), 0.001)
    return {
        "connect": min(limits.connect_s, left),
        "read": min(limits.idle_read_s, left) if stream else left,
        "write": left,
        "pool": left,
    }


def too_large(provider: str, limits: Limits, what: str, request_id: str = "") -> ProviderError:
    where = f" (request id {request_id})" if request_id else ""
    cap = limits.max_event_bytes if what == "event" else limits.max_response_bytes
    setting = (
        "JUPYTER_BYOK_MAX_EVENT_BYTES" if what == "event" else "JUPYTER_BYOK_MAX_RESPONSE_BYTES"
    )
    thing = {"event": "one stream event", "stream": "the stream"}.get(what, "the answer")
    return ResponseTooLargeError(
        f"{provider} sent more than {cap:,} bytes in {thing}{where}, so reading stopped "
        f"(not retried; the call may be billed): ask for a shorter answer, or raise {setting}",
        provider=provider,
        status_code=200,
        request_id=request_id or None,
        error_type="response_too_large",
    )


def cut_off(
    provider: str, status: int, received: int, how: str | BaseException, request_id: str = ""
) -> ProviderError:
    """An answer the provider started (status line sent) that did not arrive whole: never
    retried, since the provider may have billed it. ``how``: what happened, or the
    exception that ended the read."""
    where = f" (request id {request_id})" if request_id else ""
    cls: type[ProviderError] = ProviderTimeoutError
    if isinstance(how, BaseException):
        if isinstance(how, (TimeoutError, *_httpx_kinds()[0])):
            how = "went silent for longer than the read timeout (JUPYTER_BYOK_READ_TIMEOUT)"
        else:
            how, cls = f"was cut off ({type(how).__name__})", StreamError
    return cls(
        f"{provider} started answering (HTTP {status}) but the answer {how} after "
        f"{received:,} bytes{where}; not retried, as the call may be billed: try again",
        provider=provider,
        status_code=status,
        request_id=request_id or None,
        error_type="cut_off",
    )


async def read_body(
    response: Any,
    provider: str,
    limits: Limits,
    received: list[int] | None = None,
    *,
    truncate: bool = False,
) -> bytes:
    """The whole (decoded) body of an open response, closing it; ``received[0]`` follows
    the bytes read. Past ``limits.max_response_bytes`` reading stops:
    :class:`ResponseTooLargeError`, or with ``truncate`` (an error body) the bytes read so
    far. A connection that breaks mid-body is :func:`cut_off` (never retried)."""
    cap = limits.max_response_bytes
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap and not truncate:
        await response.aclose()
        raise too_large(provider, limits, "answer", request_id_from(response.headers))
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            parts.append(chunk)
            size += len(chunk)
            if received is not None:
                received[0] = size
            if size > cap:
                if truncate:
                    break
                raise too_large(provider, limits, "answer", request_id_from(response.headers))
    except transport_errors() as exc:
        if truncate:
            raise
        raise cut_off(
            provider, response.status_code, size, exc, request_id_from(response.headers)
        ) from exc
    finally:
        await response.aclose()
    return b"".join(parts)


async def iter_lines(
    response: Any, provider: str, limits: Limits, deadline: float
) -> AsyncIterator[str]:
    """The lines of a streamed body (CR, LF and CRLF framing), within the limits: the total
    bytes, the bytes without a line break, the deadline (the loop's clock), and the time a
    line may take to complete (a provider dripping bytes)."""
    from httpx._decoders import LineDecoder

    cap, event_cap, idle = limits.max_response_bytes, limits.max_event_bytes, limits.idle_read_s
    rid = request_id_from(response.headers)
    text = codecs.getincrementaldecoder("utf-8")("replace")
    lines = LineDecoder()
    total = unbroken = 0
    clock = asyncio.get_running_loop().time
    partial_since: float | None = None  # when the line being received got its first byte
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        now = clock()
        if total > cap:
            raise too_large(provider, limits, "stream", rid)
        if now > deadline:
            how = "was still arriving at the deadline (timeout=, JUPYTER_BYOK_TIMEOUT)"
            raise cut_off(provider, response.status_code, total, how, rid)
        if partial_since is not None and now - partial_since > idle:
            how = f"took over {idle:g} s to complete one line (bytes dripping in)"
            raise cut_off(provider, response.status_code, total, how, rid)
        found = lines.decode(text.decode(chunk))
        if not found:
            unbroken += len(chunk)
            if unbroken > event_cap:
                raise too_large(provider, limits, "event", rid)
            if partial_since is None:
                partial_since = now
            continue
        unbroken = 0
        partial_since = now if lines.buffer else None
        for line in found:
            yield line
    for line in lines.decode(text.decode(b"", True)):
        yield line
    for line in lines.flush():
        yield line


def attempt_status(error: ProviderError) -> str:
    """``timeout`` only when no answer came back (the provider may have billed the call)."""
    if isinstance(error, ProviderTimeoutError) and error.status_code is None:
        return "timeout"
    return "error"


def count(value: Any) -> int:
    """A token count from a wire field (missing or null is 0)."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def stray_message(lines: list[str]) -> str:
    """The provider's message from non-SSE lines (Gemini sends a JSON error body mid-stream)."""
    text = "\n".join(lines)
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = None
    return _provider_message(body, text)[0] or text[:300]


def wrong_shape(provider: str, what: str) -> ProviderError:
    """A 2xx answer that is not what the wire promises (an HTML page, another API's JSON, a
    proxy's placeholder): an error, never an empty success; not retried (it may be billed)."""
    return ProviderError(
        f"{provider} answered with a body that is not {what}; not retried, as the call may "
        "be billed: check the base URL, try again or report it",
        provider=provider,
        error_type="malformed_answer",
    )


def refuse_params(provider: str, params: dict[str, Any], unsupported: tuple[str, ...]) -> None:
    """Refuse a normalised parameter the provider cannot take (never drop it silently)."""
    for name in unsupported:
        if params.get(name) is not None:
            raise BadRequestError(
                f"{provider} does not take the `{name}` parameter: remove it for this model",
                provider=provider,
            )
