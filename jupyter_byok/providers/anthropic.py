"""Anthropic Messages.

Anthropic's ``input_tokens`` excludes cache reads and cache writes; our ``Usage`` counts
every input token, so ``input_tokens = input + cache_read + cache_creation``. Streamed
``message_delta`` usage is cumulative and overwrites what ``message_start`` said.

Auth: we send ``x-api-key`` with ``anthropic-version: 2023-06-01``: the API-key scheme
Anthropic documents for keys (``Authorization: Bearer`` is its OAuth path) and the one
every Anthropic-compatible gateway accepts.
"""

from __future__ import annotations

from typing import Any

from ..errors import StreamError
from ..types import DEFAULT_MAX_TOKENS, Message, ProviderResult, StreamEvent, Usage
from .base import SSEEvent, WireRequest, count, refuse_params, wrong_shape

__all__ = [
    "API_VERSION",
    "DEFAULT_MAX_TOKENS",
    "auth_headers",
    "chat_request",
    "models_request",
    "parse_chat",
    "parse_models",
    "parse_usage",
    "stream_parser",
]

API_VERSION = "2023-06-01"
_RENAMED = {"stop": "stop_sequences"}


def auth_headers(provider: str, key: Any) -> dict[str, str]:
    headers = {"anthropic-version": API_VERSION}
    if key:
        headers["x-api-key"] = key.reveal()
    return headers


def chat_request(
    provider: str,
    base_url: str,
    model: str,
    messages: list[Message],
    params: dict[str, Any],
    *,
    stream: bool,
) -> WireRequest:
    refuse_params(provider, params, ("seed",))
    system = [m.content for m in messages if m.role == "system"]
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [m.to_dict() for m in messages if m.role != "system"],
    }
    if system:
        body["system"] = "\n\n".join(system)
    for name, value in params.items():
        if value is None:
            continue
        if name == "stop":
            value = [value] if isinstance(value, str) else list(value)
        body[_RENAMED.get(name, name)] = value
    if stream:
        body["stream"] = True
    return WireRequest("POST", base_url + "/v1/messages", {}, body)


def parse_usage(raw: Any) -> Usage:
    """Normalise Anthropic usage (input excludes cache reads and writes; output includes
    thinking). Writes not attributed to a TTL count as 5-minute writes (the default TTL)."""
    if not isinstance(raw, dict):
        return Usage()
    read = count(raw.get("cache_read_input_tokens"))
    write = count(raw.get("cache_creation_input_tokens"))
    split = raw.get("cache_creation")
    split = split if isinstance(split, dict) else {}
    w1 = min(count(split.get("ephemeral_1h_input_tokens")), write)
    details = raw.get("output_tokens_details")
    thinking = details.get("thinking_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=count(raw.get("input_tokens")) + read + write,
        cached_input_tokens=read,
        cache_write_tokens=write - w1,
        cache_write_1h_tokens=w1,
        output_tokens=count(raw.get("output_tokens")),
        reasoning_tokens=count(thinking),
    )


def _text(content: Any) -> str:
    return "".join(
        str(block.get("text", ""))
        for block in content or ()
        if isinstance(block, dict) and block.get("type") == "text"
    )


def parse_chat(provider: str, model: str, data: Any) -> ProviderResult:
    if not isinstance(data, dict):
        raise wrong_shape(provider, "an Anthropic message (not a JSON object)")
    if data.get("type") == "error":
        err = data.get("error") or {}
        raise StreamError(
            f"{provider} reported {err.get('type', 'an error')}: {err.get('message', '')}",
            provider=provider,
            error_type=err.get("type"),
        )
    if data.get("type", "message") != "message" or not isinstance(data.get("content"), list):
        raise wrong_shape(provider, "an Anthropic message (no type message with a content list)")
    return ProviderResult(
        text=_text(data.get("content")),
        usage=parse_usage(data.get("usage")),
        model=str(data.get("model") or model),
        finish_reason=data.get("stop_reason"),
        response_id=data.get("id"),
    )


class MessageStream:
    """``message_start`` → blocks → ``message_delta`` (cumulative usage) → ``message_stop``."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider, self.model = provider, model
        self.raw_usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.response_id: str | None = None
        self.done = False

    def _merge(self, raw: Any) -> None:
        if isinstance(raw, dict):
            self.raw_usage = self.raw_usage or {}
            self.raw_usage.update({k: v for k, v in raw.items() if v is not None})

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        kind = event.event
        if kind == "ping":
            return []
        data = event.json()
        kind = data.get("type", kind) if isinstance(data, dict) else kind
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return [StreamEvent(delta=delta["text"])]
        elif kind == "message_start":
            message = data.get("message") or {}
            self.response_id = message.get("id")
            self.model = message.get("model") or self.model
            self._merge(message.get("usage"))
        elif kind == "message_delta":
            self.finish_reason = (data.get("delta") or {}).get("stop_reason") or self.finish_reason
            self._merge(data.get("usage"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            err = data.get("error") or {}
            raise StreamError(
                f"anthropic reported {err.get('type', 'an error')} mid-stream: "
                f"{err.get('message', '')}; try again",
                provider=self.provider,
                error_type=err.get("type"),
            )
        return []

    def partial_usage(self) -> Usage | None:
        return None if self.raw_usage is None else parse_usage(self.raw_usage)

    def finish(self) -> StreamEvent:
        if not self.done:
            raise StreamError(f"the {self.provider} stream ended before message_stop: try again")
        return StreamEvent(
            usage=parse_usage(self.raw_usage),
            finish_reason=self.finish_reason,
            response_id=self.response_id,
            model=self.model,
            done=True,
        )


def stream_parser(provider: str, model: str) -> MessageStream:
    return MessageStream(provider, model)


def models_request(provider: str, base_url: str) -> WireRequest:
    return WireRequest("GET", base_url + "/v1/models", params={"limit": "1000"})


def parse_models(data: Any) -> tuple[list[str], WireRequest | None]:
    items = data.get("data") if isinstance(data, dict) else None
    ids = [str(m.get("id")) for m in items or () if isinstance(m, dict)]
    return ids, None
