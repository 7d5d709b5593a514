"""The one place provider calls are made: request, retry, parse, report every attempt.

Invariants:

* ``on_attempt`` is called exactly once per HTTP attempt (success, error, timeout, cancel),
  before the call returns or raises, so the ledger can write one row per attempt.
* Streams are retried only before their first byte; a stream that breaks midway raises
  :class:`~jupyter_byok.errors.StreamError` after its attempt (with the usage known so far)
  was reported.
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

from ..errors import ConfigError, ProviderError, StreamError
from ..redact import Secret
from ..types import Attempt, Message, ProviderResult, SearchResult, StreamEvent, Usage
from . import ProviderSpec
from .base import (
    AttemptRecord,
    CallResult,
    FinalEvent,
    RetryPolicy,
    SSEDecoder,
    Wire,
    WireRequest,
    attempt_status,
    error_from_exception,
    error_from_response,
    request_id_from,
    send_request,
    stray_message,
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


def _headers(wire_req: WireRequest, auth: dict[str, str]) -> dict[str, str]:
    return {**wire_req.headers, **auth} if auth else wire_req.headers


def _content(wire_req: WireRequest) -> bytes | None:
    if wire_req.json is None:
        return None
    return json.dumps(wire_req.json, separators=(",", ":"), ensure_ascii=False).encode()


def _report(on_attempt: OnAttempt, attempt: Attempt) -> None:
    if on_attempt is not None:
        on_attempt(attempt)


async def _send(
    provider: str,
    wire_req: WireRequest,
    headers: dict[str, str],
    *,
    client: AsyncHTTPClient,
    retry: RetryPolicy | None,
    on_attempt: OnAttempt,
    timeout: Any,
    stream: bool,
) -> tuple[Any, int, float]:
    """Send until the provider answers below 400 or a failure is final, reporting every
    failed attempt; returns (response, attempt number, when that attempt started). A
    streamed response is returned open: the caller reads and closes it."""
    policy = retry or DEFAULT_RETRY
    content = _content(wire_req)
    query = wire_req.params or None
    errors = transport_errors()
    number = 0
    while True:
        number += 1
        start = time.perf_counter()
        response_headers: Any = None
        try:
            response = await send_request(
                client,
                wire_req.method,
                wire_req.url,
                content=content,
                headers=headers,
                params=query,
                timeout=timeout,
                stream=stream,
            )
        except asyncio.CancelledError:
            _report(on_attempt, AttemptRecord(number, "cancelled", time.perf_counter() - start))
            raise
        except errors as exc:
            error = error_from_exception(provider, exc, wire_req.url.split("?")[0])
        else:
            response_headers = response.headers
            if response.status_code < 400:
                return response, number, start
            if stream:
                try:
                    body = await response.aread()
                except errors:
                    body = b""
                finally:
                    await response.aclose()
            else:
                body = response.content
            error = error_from_response(provider, response.status_code, response_headers, body)
        delay = policy.delay(number - 1, error, response_headers)
        _report(on_attempt, _failed(number, time.perf_counter() - start, error, delay is not None))
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
    parse: Callable[[Any], tuple[T, Usage | None, str | None]],
    timeout: Any = None,
) -> tuple[T, str, int, float]:
    """Send with retries; returns (parsed, request id, attempts, latency of the last)."""
    headers = _headers(wire_req, auth)
    if wire_req.json is not None:
        headers = {**headers, "content-type": "application/json"}
    response, number, start = await _send(
        provider,
        wire_req,
        headers,
        client=client,
        retry=retry,
        on_attempt=on_attempt,
        timeout=timeout,
        stream=False,
    )
    latency = time.perf_counter() - start
    rid = request_id_from(response.headers)
    try:
        parsed, usage, response_id = parse(response.json())
    except ProviderError as exc:  # an error body sent with a 200
        exc.status_code = exc.status_code or response.status_code
        exc.request_id = exc.request_id or rid or None
        _report(on_attempt, _failed(number, latency, exc, False, rid))
        raise
    except (ValueError, AttributeError, TypeError, KeyError, IndexError) as exc:
        where = f" (request id {rid})" if rid else ""
        error = ProviderError(
            f"{provider} sent an answer that could not be read "
            f"({type(exc).__name__}){where}; try again or report it",
            provider=provider,
            status_code=response.status_code,
            request_id=rid or None,
        )
        _report(on_attempt, _failed(number, latency, error, False, rid))
        raise error from exc
    _report(
        on_attempt,
        AttemptRecord(
            number,
            "ok",
            latency,
            http_status=response.status_code,
            response_id=response_id,
            usage=usage,
            request_id=rid,
            provider=provider,
        ),
    )
    return parsed, rid, number, latency


def _failed(
    number: int, latency: float, error: ProviderError, will_retry: bool, rid: str = ""
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
) -> ProviderResult:
    """One non-streamed chat call; returns a :class:`~.base.CallResult`."""
    wire = _wire(spec)
    wire_req = wire.chat_request(
        spec.name, spec.resolved_base_url(), model, messages, params, stream=False
    )
    auth = wire.auth_headers(spec.name, key)

    def parse(data: Any) -> tuple[ProviderResult, Usage | None, str | None]:
        result = wire.parse_chat(spec.name, model, data)
        return result, result.usage, result.response_id

    result, rid, attempts, latency = await _call(
        spec.name,
        wire_req,
        auth,
        client=client,
        retry=retry,
        on_attempt=on_attempt,
        parse=parse,
        timeout=timeout,
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
) -> AsyncGenerator[StreamEvent, None]:
    """Text deltas, then one :class:`~.base.FinalEvent` (``done=True``) with the usage.

    Close it (``async with contextlib.aclosing(stream(...))``) when stopping early: the
    connection is closed and the attempt is reported as ``cancelled`` with partial usage.
    """
    wire = _wire(spec)
    wire_req = wire.chat_request(
        spec.name, spec.resolved_base_url(), model, messages, params, stream=True
    )
    headers = {**_headers(wire_req, wire.auth_headers(spec.name, key))}
    headers["content-type"] = "application/json"
    headers["accept"] = "text/event-stream"
    provider = spec.name
    errors = transport_errors()
    response, number, start = await _send(  # with retries until the first byte
        provider,
        wire_req,
        headers,
        client=client,
        retry=retry,
        on_attempt=on_attempt,
        timeout=timeout,
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
            ),
        )

    try:
        try:
            async for line in response.aiter_lines():
                event = decoder.feed(line)
                if event is None:
                    continue
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
            if not isinstance(exc, StreamError):
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
) -> SearchResult:
    """A Tavily search; ``usage.search_credits`` as Tavily reports it."""
    if spec.wire != "tavily":
        raise ConfigError(f"{spec.name} is not a search provider: use tavily")
    from . import tavily

    wire_req = tavily.search_request(spec.resolved_base_url(), query, params)

    def parse(data: Any) -> tuple[SearchResult, Usage | None, str | None]:
        result = tavily.parse_search(query, params, data)
        return result, result.usage, result.response_id

    result, rid, _, latency = await _call(
        spec.name,
        wire_req,
        tavily.auth_headers(spec.name, key),
        client=client,
        retry=retry,
        on_attempt=on_attempt,
        parse=parse,
        timeout=timeout,
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
    wire_req: WireRequest | None = wire.models_request(spec.name, spec.resolved_base_url())
    auth = wire.auth_headers(spec.name, key)
    names: list[str] = []
    pages = 0
    while wire_req is not None and pages < 20:
        pages += 1
        (page, wire_req), _, _, _ = await _call(
            spec.name,
            wire_req,
            auth,
            client=client,
            retry=RetryPolicy(max_retries=1, initial_delay=0.2),
            on_attempt=None,
            parse=lambda data: (wire.parse_models(data), None, None),
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
        wire_req = wire.usage_request(spec.resolved_base_url())
    else:
        wire_req = wire.models_request(spec.name, spec.resolved_base_url())
    start = time.perf_counter()
    try:
        data, rid, _, latency = await _call(
            spec.name,
            wire_req,
            wire.auth_headers(spec.name, key),
            client=client,
            retry=RetryPolicy(max_retries=0),
            on_attempt=None,
            parse=lambda data: (data, None, None),
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
        detail, models = wire.describe_usage(data), None
    else:
        ids, more = wire.parse_models(data)
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
