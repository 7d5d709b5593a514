"""The one place provider calls are made: request, retry, parse, report every attempt.

Invariants:

* ``on_attempt`` is called exactly once per HTTP attempt (success, error, timeout, cancel),
  before the call returns or raises, so the ledger can write one row per attempt.
* Streams are retried only before their first byte; a stream that breaks midway raises
  :class:`~jupyter_byok.errors.StreamError` after its attempt (with the usage known so far)
  was reported.
* A key bound to an origin (every stored or environment key) is sent to that origin only
  (``_auth``), and its calls go to its own base URL (``_base_url``).
* The key is revealed only inside each wire module's ``auth_headers``; it never reaches an
  error message, a log line or a URL.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import (
    ConfigError,
    ProviderError,
    ProviderTimeoutError,
    ResponseTooLargeError,
    StreamError,
)
from ..origin import BoundSecret, check_destination
from ..redact import Secret
from ..types import Attempt, Message, ProviderResult, SearchResult, StreamEvent, Usage
from . import ProviderSpec
from .base import (
    AttemptRecord,
    CallResult,
    FinalEvent,
    Limits,
    RetryPolicy,
    SSEDecoder,
    Wire,
    WireRequest,
    attempt_status,
    attempt_timeouts,
    cut_off,
    deadline_passed,
    default_limits,
    error_from_exception,
    error_from_response,
    iter_lines,
    read_body,
    request_id_from,
    send_request,
    stray_message,
    timeout_at,
    too_large,
    transport_errors,
)

if TYPE_CHECKING:
    from .base import AsyncHTTPClient

__all__ = ["DEFAULT_RETRY", "check_key", "complete", "list_models", "search", "stream"]

DEFAULT_RETRY = RetryPolicy()
OnAttempt = Callable[[Attempt], None] | None
T = TypeVar("T")
_WIRES: dict[str, Any] = {}
_CHAT_WIRES = ("openai", "anthropic", "gemini")


def _wire(spec: ProviderSpec) -> Wire:
    if spec.wire not in _CHAT_WIRES:
        raise ConfigError(
            f"{spec.name} ({spec.wire}) does not answer chat calls: use one of the chat providers"
        )
    module = _WIRES.get(spec.wire)
    if module is None:
        module = _WIRES[spec.wire] = importlib.import_module(f"{__package__}.{spec.wire}")
    wire: Wire = module
    return wire


def _base_url(spec: ProviderSpec, key: Secret | None) -> str:
    """Where the call goes: a bound key's own base URL (a key stored with ``--base-url``
    routes its calls there), else the provider's."""
    if isinstance(key, BoundSecret):
        return key.base_url
    return spec.resolved_base_url()


def _auth(wire: Any, spec: ProviderSpec, key: Secret | None, url: str) -> dict[str, str]:
    """The auth headers for a request to ``url``: a bound key only to its own origin."""
    check_destination(key, url, spec.name)
    auth: dict[str, str] = wire.auth_headers(spec.name, key)
    return auth


def _headers(wire_req: WireRequest, auth: dict[str, str]) -> dict[str, str]:
    return {**wire_req.headers, **auth} if auth else wire_req.headers


def _content(wire_req: WireRequest) -> bytes | None:
    if wire_req.json is None:
        return None
    return json.dumps(wire_req.json, separators=(",", ":"), ensure_ascii=False).encode()


def _report(on_attempt: OnAttempt, attempt: Attempt) -> None:
    if on_attempt is not None:
        on_attempt(attempt)


def _as_is(out: Any) -> tuple[Any, Usage | None, str | None]:
    return out, None, None


def _chat_shape(result: ProviderResult) -> tuple[ProviderResult, Usage | None, str | None]:
    return result, result.usage, result.response_id


def _search_shape(result: SearchResult) -> tuple[SearchResult, Usage | None, str | None]:
    return result, result.usage, result.response_id


def _call_limits(
    params: dict[str, Any], timeout: Any, limits: Limits | None
) -> tuple[dict[str, Any], Limits]:
    """The call's limits (``timeout=`` as a keyword or among the params sets its deadline),
    and the params without ``timeout`` (never sent to the provider)."""
    base = limits or default_limits()
    if "timeout" in params:
        given = params["timeout"]
        params = {k: v for k, v in params.items() if k != "timeout"}
        if timeout is None:
            timeout = given
    return params, base.for_call(timeout)


async def _send(
    provider: str,
    wire_req: WireRequest,
    headers: dict[str, str],
    *,
    client: AsyncHTTPClient,
    retry: RetryPolicy | None,
    on_attempt: OnAttempt,
    limits: Limits,
    deadline: float,
    stream: bool,
) -> tuple[Any, bytes, int, float, float]:
    """Send until the provider answers 2xx or a failure is final, reporting every failed
    attempt; returns (response, body, attempt number, when that attempt started on the
    ``perf_counter`` clock and on the wall clock).

    A non-streamed answer is read whole (within the size cap); a streamed one is returned
    open, for the caller to read and close. Every attempt, the waits between them and
    the reading all end by ``deadline`` (the loop's clock). A 3xx is an error, never
    followed. An answer that breaks off after its 2xx status line is not retried: the
    provider may have billed it.
    """
    policy = retry or DEFAULT_RETRY
    content = _content(wire_req)
    query = wire_req.params or None
    errors = transport_errors()
    loop = asyncio.get_running_loop()
    number = 0
    while True:
        number += 1
        start = time.perf_counter()
        wall = time.time()
        response_headers: Any = None
        answering = 0  # the 2xx status of an answer being read
        received = [0]
        try:
            async with timeout_at(deadline):
                response = await send_request(
                    client,
                    wire_req.method,
                    wire_req.url,
                    content=content,
                    headers=headers,
                    params=query,
                    timeout=attempt_timeouts(limits, deadline, loop, stream=stream),
                    stream=True,
                )
                response_headers = response.headers
                status = response.status_code
                if 200 <= status < 300:
                    if stream:
                        return response, b"", number, start, wall
                    answering = status
                    body = await read_body(response, provider, limits, received)
                    return response, body, number, start, wall
                try:
                    body = await read_body(response, provider, limits, truncate=True)
                except errors:
                    body = b""
                error = error_from_response(provider, status, response_headers, body)
        except asyncio.CancelledError:
            _report(
                on_attempt,
                AttemptRecord(number, "cancelled", time.perf_counter() - start, started_at=wall),
            )
            raise
        except ProviderError as exc:  # over the size cap, or cut off (read_body)
            error = exc
        except TimeoutError:
            if answering:
                how = "was still arriving at the deadline (timeout=, JUPYTER_BYOK_TIMEOUT)"
                rid = request_id_from(response_headers)
                error = cut_off(provider, answering, received[0], how, rid)
            else:
                error = deadline_passed(provider, limits)
        except errors as exc:
            error = error_from_exception(provider, exc, wire_req.url.split("?")[0])
        delay = policy.delay(number - 1, error, response_headers)
        if delay is not None and loop.time() + delay >= deadline:
            delay = None  # no time left for another attempt
        _report(
            on_attempt, _failed(number, time.perf_counter() - start, error, delay is not None, wall)
        )
        if delay is None:
            raise error
        await asyncio.sleep(delay)


async def _call(
    provider: str,
    wire_req: WireRequest,
    auth: dict[str, str],
    *,
    client: AsyncHTTPClient,
    retry: RetryPolicy | None,
    on_attempt: OnAttempt,
    parse: Callable[..., Any],
    parse_args: tuple[Any, ...] = (),
    shape: Callable[[Any], tuple[T, Usage | None, str | None]] = _as_is,
    limits: Limits | None = None,
) -> tuple[T, str, int, float]:
    """Send with retries, then ``shape(parse(*parse_args, body as JSON))``; returns (parsed,
    request id, attempts, latency of the last). ``parse`` is a module-level function, so
    that a large answer can be parsed in a worker process (:mod:`._offload`)."""
    limits = limits or default_limits()
    headers = _headers(wire_req, auth)
    if wire_req.json is not None:
        headers = {**headers, "content-type": "application/json"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.deadline_s
    response, body, number, start, wall = await _send(
        provider,
        wire_req,
        headers,
        client=client,
        retry=retry,
        on_attempt=on_attempt,
        limits=limits,
        deadline=deadline,
        stream=False,
    )
    latency = time.perf_counter() - start
    rid = request_id_from(response.headers)
    status = response.status_code
    try:
        if len(body) <= limits.parse_inline_bytes:
            out = parse(*parse_args, json.loads(body))
        else:
            from ._offload import parse_elsewhere

            async with timeout_at(deadline):
                out = await parse_elsewhere(
                    provider, parse, parse_args, body, deadline - loop.time()
                )
        parsed, usage, response_id = shape(out)
    except asyncio.CancelledError:
        _report(on_attempt, AttemptRecord(number, "cancelled", latency, started_at=wall))
        raise
    except ProviderError as exc:  # an error body sent with a 200, or the wrong shape
        exc.status_code = exc.status_code or status
        exc.request_id = exc.request_id or rid or None
        _report(on_attempt, _failed(number, latency, exc, False, wall, rid))
        raise
    except TimeoutError:
        error = cut_off(provider, status, len(body), "could not be parsed before the deadline", rid)
        _report(on_attempt, _failed(number, latency, error, False, wall, rid))
        raise error from None
    except (
        ValueError,
        AttributeError,
        TypeError,
        KeyError,
        IndexError,
        RecursionError,
        MemoryError,
    ) as exc:
        where = f" (request id {rid})" if rid else ""
        error = ProviderError(
            f"{provider} answered {status} with a body that could not be read as an answer "
            f"({type(exc).__name__}){where}; not retried, as the call may be billed: "
            "try again or report it",
            provider=provider,
            status_code=status,
            request_id=rid or None,
            error_type="malformed_answer",
        )
        _report(on_attempt, _failed(number, latency, error, False, wall, rid))
        raise error from exc
    _report(
        on_attempt,
        AttemptRecord(
            number,
            "ok",
            latency,
            http_status=status,
            response_id=response_id,
            usage=usage,
            request_id=rid,
            provider=provider,
            started_at=wall,
        ),
    )
    return parsed, rid, number, latency


def _failed(
    number: int,
    latency: float,
    error: ProviderError,
    will_retry: bool,
    started_at: float | None = None,
    rid: str = "",
) -> AttemptRecord:
    return AttemptRecord(
        number,
        attempt_status(error),
        latency,
        http_status=error.status_code,
        error_type=type(error).__name__,
        error_message=error.message,
        will_retry=will_retry,
        request_id=error.request_id or rid,
        provider=error.provider,
        started_at=started_at,
    )


async def complete(
    spec: ProviderSpec,
    model: str,
    messages: list[Message],
    params: dict[str, Any],
    key: Secret | None,
    *,
    client: AsyncHTTPClient,
    retry: RetryPolicy | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
    timeout: Any = None,
    limits: Limits | None = None,
) -> ProviderResult:
    """One non-streamed chat call; returns a :class:`~.base.CallResult`. ``timeout``
    (seconds, or ``params["timeout"]``): the call's deadline, retries included."""
    wire = _wire(spec)
    params, limits = _call_limits(params, timeout, limits)
    wire_req = wire.chat_request(
        spec.name, _base_url(spec, key), model, messages, params, stream=False
    )
    auth = _auth(wire, spec, key, wire_req.url)
    result, rid, attempts, latency = await _call(
        spec.name,
        wire_req,
        auth,
        client=client,
        retry=retry,
        on_attempt=on_attempt,
        parse=wire.parse_chat,
        parse_args=(spec.name, model),
        shape=_chat_shape,
        limits=limits,
    )
    return CallResult(
        text=result.text,
        usage=result.usage,
        model=result.model,
        finish_reason=result.finish_reason,
        response_id=result.response_id,
        http_status=200,
        ttft_s=latency,
        request_id=rid,
        latency_s=latency,
        attempts=attempts,
    )


async def stream(
    spec: ProviderSpec,
    model: str,
    messages: list[Message],
    params: dict[str, Any],
    key: Secret | None,
    *,
    client: AsyncHTTPClient,
    retry: RetryPolicy | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
    timeout: Any = None,
    limits: Limits | None = None,
) -> AsyncGenerator[StreamEvent, None]:
    """Text deltas, then one :class:`~.base.FinalEvent` (``done=True``) with the usage.

    Close it (``async with contextlib.aclosing(stream(...))``) when stopping early: the
    connection is closed and the attempt is reported as ``cancelled`` with partial usage.
    The whole stream ends by the call's deadline (``timeout``), and within the size caps.
    """
    wire = _wire(spec)
    params, limits = _call_limits(params, timeout, limits)
    wire_req = wire.chat_request(
        spec.name, _base_url(spec, key), model, messages, params, stream=True
    )
    headers = {**_headers(wire_req, _auth(wire, spec, key, wire_req.url))}
    headers["content-type"] = "application/json"
    headers["accept"] = "text/event-stream"
    provider = spec.name
    errors = transport_errors()
    deadline = asyncio.get_running_loop().time() + limits.deadline_s
    response, _, number, start, wall = await _send(  # with retries until the first byte
        provider,
        wire_req,
        headers,
        client=client,
        retry=retry,
        on_attempt=on_attempt,
        limits=limits,
        deadline=deadline,
        stream=True,
    )

    rid = request_id_from(response.headers)
    parser = wire.stream_parser(provider, model)
    decoder = SSEDecoder()
    ttft: float | None = None
    reported = False

    def report(status: str, error: ProviderError | None = None) -> None:
        nonlocal reported
        if reported:
            return
        reported = True
        _report(
            on_attempt,
            AttemptRecord(
                number,
                status,
                time.perf_counter() - start,
                http_status=response.status_code,
                error_type=type(error).__name__ if error else None,
                error_message=error.message if error else None,
                response_id=getattr(parser, "response_id", None),
                usage=parser.partial_usage(),
                ttft_s=ttft,
                request_id=rid,
                provider=provider,
                started_at=wall,
            ),
        )

    event_cap = limits.max_event_bytes
    try:
        try:
            pending = 0  # bytes of the event being received
            async for line in iter_lines(response, provider, limits, deadline):
                event = decoder.feed(line)
                if event is None:
                    pending += len(line)
                    if pending > event_cap:
                        raise too_large(provider, limits, "event", rid)
                    continue
                pending = 0
                for out in parser.feed(event):
                    if ttft is None:
                        ttft = time.perf_counter() - start
                    yield out
            event = decoder.flush()
            if event is not None:
                for out in parser.feed(event):
                    yield out
            try:
                final = parser.finish()
            except StreamError:
                if not decoder.stray:
                    raise
                said = stray_message(decoder.stray)  # e.g. Gemini's JSON error body
                raise StreamError(
                    f"the {provider} stream broke off with an error: {said}; try again",
                    provider=provider,
                    request_id=rid or None,
                ) from None
        except errors as exc:
            where = f" (request id {rid})" if rid else ""
            error = StreamError(
                f"the {provider} stream broke off midway ({type(exc).__name__}){where}; "
                "the partial answer may still be billed: try again",
                provider=provider,
                status_code=response.status_code,
                request_id=rid or None,
                error_type=type(exc).__name__,
            )
            report("error", error)
            raise error from exc
        except ProviderError as exc:
            if not isinstance(exc, (StreamError, ResponseTooLargeError, ProviderTimeoutError)):
                exc = StreamError(exc.message, provider=provider, request_id=rid or None)
            elif exc.request_id is None:
                exc.request_id = rid or None
            report("error", exc)
            raise exc
        report("ok")
        yield FinalEvent(
            usage=final.usage,
            finish_reason=final.finish_reason,
            response_id=final.response_id,
            model=final.model,
            done=True,
            request_id=rid,
            latency_s=time.perf_counter() - start,
            ttft_s=ttft,
            attempts=number,
        )
    except (asyncio.CancelledError, GeneratorExit):
        report("cancelled")
        raise
    finally:
        await response.aclose()


async def search(
    spec: ProviderSpec,
    query: str,
    params: dict[str, Any],
    key: Secret | None,
    *,
    client: AsyncHTTPClient,
    retry: RetryPolicy | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
    timeout: Any = None,
    limits: Limits | None = None,
) -> SearchResult:
    """A Tavily search; ``usage.search_credits`` as Tavily reports it."""
    if spec.wire != "tavily":
        raise ConfigError(f"{spec.name} is not a search provider: use tavily")
    from . import tavily

    params, limits = _call_limits(params, timeout, limits)
    wire_req = tavily.search_request(_base_url(spec, key), query, params)
    result, rid, _, latency = await _call(
        spec.name,
        wire_req,
        _auth(tavily, spec, key, wire_req.url),
        client=client,
        retry=retry,
        on_attempt=on_attempt,
        parse=tavily.parse_search,
        parse_args=(query, params),
        shape=_search_shape,
        limits=limits,
    )
    result.request_id = result.request_id or rid
    result.latency_s = latency
    return result


def _models_wire(spec: ProviderSpec) -> Any:
    if spec.wire == "tavily":
        from . import tavily

        return tavily
    return _wire(spec)


async def list_models(
    spec: ProviderSpec, key: Secret | None, *, client: AsyncHTTPClient
) -> list[str]:
    """Model ids the key can use (following pages), sorted."""
    wire = _models_wire(spec)
    if spec.wire == "tavily":
        return []
    wire_req: WireRequest | None = wire.models_request(spec.name, _base_url(spec, key))
    names: list[str] = []
    pages = 0
    while wire_req is not None and pages < 20:
        pages += 1
        auth = _auth(wire, spec, key, wire_req.url)  # each page: a next-page URL too
        page: list[str]
        (page, wire_req), _, _, _ = await _call(
            spec.name,
            wire_req,
            auth,
            client=client,
            retry=RetryPolicy(max_retries=1, initial_delay=0.2),
            on_attempt=None,
            parse=wire.parse_models,
        )
        names += page
    return sorted(set(names))


async def check_key(
    spec: ProviderSpec,
    key: Secret,
    *,
    client: AsyncHTTPClient,
    raise_errors: bool = False,
) -> dict[str, Any]:
    """Ask the provider's cheapest endpoint whether ``key`` works.

    Returns ``{"ok", "status", "latency_s", "detail", "models"}``; with ``raise_errors``
    a refusal raises the mapped :class:`~jupyter_byok.errors.ProviderError` instead.
    """
    wire = _models_wire(spec)
    if spec.wire == "tavily":
        wire_req = wire.usage_request(_base_url(spec, key))
    else:
        wire_req = wire.models_request(spec.name, _base_url(spec, key))
    start = time.perf_counter()
    data: Any
    try:
        data, rid, _, latency = await _call(
            spec.name,
            wire_req,
            _auth(wire, spec, key, wire_req.url),
            client=client,
            retry=RetryPolicy(max_retries=0),
            on_attempt=None,
            parse=wire.describe_usage if spec.wire == "tavily" else wire.parse_models,
        )
    except ProviderError as exc:
        if raise_errors:
            raise
        return {
            "ok": False,
            "status": exc.status_code,
            "latency_s": round(time.perf_counter() - start, 4),
            "detail": exc.message,
            "error_type": type(exc).__name__,
            "models": None,
        }
    if spec.wire == "tavily":
        detail, models = data, None
    else:
        ids, more = data
        models = len(ids)
        detail = f"{models}{'+' if more else ''} models available"
    return {
        "ok": True,
        "status": 200,
        "latency_s": round(latency, 4),
        "detail": detail,
        "request_id": rid,
        "models": models,
    }
