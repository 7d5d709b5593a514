"""Abusive providers for the fake: answers that are too big, never end, or come too slowly.

Each is a scripted fault (:meth:`FakeProviders.add_fault`) played out asynchronously on the
fake's event loop, writing with the transport's flow control so that the fake itself stays
small however much it sends:

* ``huge_body``: a 200 of ``size`` bytes with a ``Content-Length`` (``shape="text"``: one long
  answer text; ``shape="nested"``: a valid answer padded with millions of tiny JSON values,
  the worst case to parse). ``declare=False`` sends it chunked, without a length.
* ``endless_stream``: a 200 event stream of valid text deltas (``piece`` characters each)
  that never ends (until the client goes away, or ``limit`` bytes).
* ``drip``: a 200 event stream whose bytes come one at a time, every ``interval`` seconds.
* ``slow_headers``: the status line and headers one byte every ``interval`` seconds
  (slow-loris), then a normal answer.
* ``hang``: the request is read and never answered.
* ``truncated_body``: a 200 that declares its full length, sends ``fraction`` of it, then
  closes the connection.
* ``redirect``: a ``status`` (302) with a ``Location`` and a complete OpenAI-shaped answer.
* ``wrong_shape``: a 200 whose JSON body (``body``, default ``{"unexpected": true}``) is not
  the wire's answer.

Nothing here reaches past the fake's loopback connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .wire import compact_json, sse

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["ABUSE_FAULTS", "abuse"]

ABUSE_FAULTS = (
    "huge_body",
    "endless_stream",
    "drip",
    "slow_headers",
    "hang",
    "truncated_body",
    "redirect",
    "wrong_shape",
)
_CHUNK = 256 * 1024


def _answer(provider: str, model: str, text: str) -> dict[str, Any]:
    """A complete non-streamed answer in ``provider``'s wire shape."""
    if provider == "anthropic":
        return {
            "id": "msg_abuse",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 3},
        }
    if provider == "gemini":
        return {
            "candidates": [
                {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP"}
            ],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 3},
            "modelVersion": model,
            "responseId": "resp-abuse",
        }
    return {
        "id": "chatcmpl-abuse",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
    }


def _delta_frame(provider: str, text: str) -> bytes:
    if provider == "anthropic":
        data = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}}
        data["delta"]["text"] = text  # type: ignore[index]
        return sse(data, "content_block_delta")
    if provider == "gemini":
        cand = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        return sse({"candidates": [cand]}, crlf=True)
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    return sse({"id": "chatcmpl-abuse", "object": "chat.completion.chunk", "choices": [choice]})


def _first_frame(provider: str, model: str) -> bytes:
    if provider == "anthropic":
        message: dict[str, Any] = {"id": "msg_abuse", "type": "message", "role": "assistant"}
        message |= {"model": model, "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}}
        return sse({"type": "message_start", "message": message}, "message_start")
    return _delta_frame(provider, "")


def _head(status: int, headers: dict[str, str]) -> bytes:
    reasons = {200: "OK", 301: "Moved Permanently", 302: "Found", 307: "Temporary Redirect"}
    lines = [f"HTTP/1.1 {status} {reasons.get(status, 'Status')}", "connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Writer:
    """Writes to the fake's transport with its flow control; knows when the client left."""

    def __init__(self, exchange: Exchange, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.protocol: Any = transport.get_protocol()

    @property
    def gone(self) -> bool:
        return self.transport.is_closing()

    async def write(self, data: bytes) -> bool:
        """Send ``data``; ``False`` once the client has gone."""
        if self.gone:
            return False
        self.transport.write(data)
        writable = getattr(self.protocol, "writable", None)
        if writable is not None and not writable.is_set():
            await writable.wait()
        else:
            await asyncio.sleep(0)
        return not self.gone

    async def chunked(self, data: bytes) -> bool:
        return await self.write(b"%x\r\n%s\r\n" % (len(data), data))


async def _huge_parts(provider: str, model: str, size: int, shape: str) -> AsyncIterator[bytes]:
    """A valid answer of about ``size`` bytes, in pieces (never whole in memory)."""
    marker = "\x00FILL\x00"
    if shape == "nested":
        body = _answer(provider, model, "tiny answer")
        body["padding"] = marker
    else:
        body = _answer(provider, model, marker)
    head, tail = compact_json(body).encode().split(json.dumps(marker).encode())
    yield head + (b"[" if shape == "nested" else b'"')
    left = max(size - len(head) - len(tail) - 2, 0)
    unit = b"[]," if shape == "nested" else b"a"
    block = unit * (_CHUNK // len(unit))
    while left > len(block):
        yield block
        left -= len(block)
    last = unit * max(left // len(unit), 1)
    if shape == "nested":
        last = last[:-1]  # no trailing comma
    yield last + (b"]" if shape == "nested" else b'"') + tail


async def abuse(exchange: Exchange, transport: asyncio.Transport) -> None:
    """Play out the exchange's abusive fault; the connection is closed afterwards."""
    fault = exchange.fault
    assert fault is not None
    kind, opts = fault.kind, fault.opts
    provider = "openai" if exchange.provider in ("xai", "compat") else exchange.provider
    model = exchange.model or "model"
    out = _Writer(exchange, transport)
    ids = exchange.id_headers()
    if kind == "hang":
        while not out.gone:
            await asyncio.sleep(0.05)
        return
    if kind in ("redirect", "wrong_shape", "truncated_body"):
        if kind == "redirect":
            status = int(opts.get("status", 302))
            body = compact_json(_answer(provider, model, "redirected answer")).encode()
            extra = {"location": str(opts.get("location", "http://127.0.0.1:9/elsewhere"))}
        else:
            status = 200
            value = opts.get("body", {"unexpected": True})
            if kind == "truncated_body":
                value = _answer(provider, model, "x" * int(opts.get("size", 20_000)))
            body = value if isinstance(value, bytes) else compact_json(value).encode()
            extra = {}
        headers = {"content-type": "application/json", "content-length": str(len(body))}
        await out.write(_head(status, {**headers, **ids, **extra}))
        if kind == "truncated_body":
            await out.write(body[: int(len(body) * float(opts.get("fraction", 0.5)))])
            await asyncio.sleep(float(opts.get("pause", 0.05)))
            return
        await out.write(body)
        return
    if kind == "slow_headers":
        body = compact_json(_answer(provider, model, "slow answer")).encode()
        head = _head(200, {"content-type": "application/json", "content-length": str(len(body))})
        interval = float(opts.get("interval", 1.0))
        for i in range(len(head)):
            if not await out.write(head[i : i + 1]):
                return
            await asyncio.sleep(interval)
        await out.write(body)
        return
    if kind == "huge_body":
        size = int(opts.get("size", 200 * 1024 * 1024))
        declare = bool(opts.get("declare", True))
        headers = {"content-type": "application/json", **ids}
        headers["content-length" if declare else "transfer-encoding"] = (
            str(await _measure(provider, model, size, str(opts.get("shape", "text"))))
            if declare
            else "chunked"
        )
        if not await out.write(_head(200, headers)):
            return
        async for part in _huge_parts(provider, model, size, str(opts.get("shape", "text"))):
            if not await (out.write(part) if declare else out.chunked(part)):
                return
        if not declare:
            await out.write(b"0\r\n\r\n")
        return
    # the event streams
    headers = {"content-type": "text/event-stream", "transfer-encoding": "chunked", **ids}
    if not await out.write(_head(200, headers)):
        return
    if kind == "drip":
        interval = float(opts.get("interval", 1.0))
        data = _first_frame(provider, model) + _delta_frame(provider, "drip " * 40) * 1000
        for i in range(len(data)):
            if not await out.chunked(data[i : i + 1]):
                return
            await asyncio.sleep(interval)
        return
    piece = int(opts.get("piece", 1000))
    limit = int(opts.get("limit", 0))
    frame = _delta_frame(provider, "y" * piece)
    batch = frame * max(_CHUNK // len(frame), 1)
    sent = 0
    if not await out.chunked(_first_frame(provider, model)):
        return
    while not limit or sent < limit:
        if not await out.chunked(batch):
            return
        sent += len(batch)


async def _measure(provider: str, model: str, size: int, shape: str) -> int:
    total = 0
    async for part in _huge_parts(provider, model, size, shape):
        total += len(part)
    return total
