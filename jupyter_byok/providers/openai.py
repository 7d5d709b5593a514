"""OpenAI Chat Completions: OpenAI itself, xAI, and any OpenAI-compatible endpoint.

Usage follows :mod:`jupyter_byok.types`: ``prompt_tokens`` already includes the cached
tokens and ``completion_tokens`` already includes reasoning, except on xAI, whose
reasoning may sit outside ``completion_tokens`` (detected by the ``total_tokens``
invariant); xAI's own cost (``cost_in_usd_ticks``, 1e-10 USD) is kept as reported.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ..errors import StreamError
from ..types import Message, ProviderResult, StreamEvent, Usage
from .base import SSEEvent, WireRequest, count, wrong_shape

__all__ = [
    "auth_headers",
    "chat_request",
    "models_request",
    "parse_chat",
    "parse_models",
    "parse_usage",
    "stream_parser",
]

USD_TICKS = Decimal(10_000_000_000)


def auth_headers(provider: str, key: Any) -> dict[str, str]:
    """``Authorization: Bearer``; keyless OpenAI-compatible endpoints (Ollama) send none."""
    return {"authorization": "Bearer " + key.reveal()} if key else {}


def chat_request(
    provider: str,
    base_url: str,
    model: str,
    messages: list[Message],
    params: dict[str, Any],
    *,
    stream: bool,
) -> WireRequest:
    body: dict[str, Any] = {"model": model, "messages": [m.to_dict() for m in messages]}
    for name, value in params.items():
        if value is None:
            continue
        if name == "max_tokens" and provider == "openai":
            # OpenAI deprecated max_tokens and reasoning models refuse it.
            body["max_completion_tokens"] = value
        else:
            body[name] = value
    if stream:
        body["stream"] = True
        options = dict(body.get("stream_options") or {})
        options.setdefault("include_usage", True)
        body["stream_options"] = options
    return WireRequest("POST", base_url + "/chat/completions", {}, body)


def parse_usage(provider: str, raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    prompt = count(raw.get("prompt_tokens"))
    completion = count(raw.get("completion_tokens"))
    pdetails = raw.get("prompt_tokens_details") or {}
    cdetails = raw.get("completion_tokens_details") or {}
    reasoning = count(cdetails.get("reasoning_tokens"))
    output = completion
    if reasoning and count(raw.get("total_tokens")) == prompt + completion + reasoning:
        output = completion + reasoning  # xAI: reasoning reported outside completion_tokens
    usage = Usage(
        input_tokens=prompt,
        cached_input_tokens=count(pdetails.get("cached_tokens")),
        cache_write_tokens=count(pdetails.get("cache_write_tokens")),
        output_tokens=output,
        reasoning_tokens=reasoning,
    )
    ticks = raw.get("cost_in_usd_ticks")
    if isinstance(ticks, (int, float)) and not isinstance(ticks, bool):
        usage.provider_cost_usd = Decimal(int(ticks)) / USD_TICKS
    return usage


def _check_error(data: Any, provider: str) -> None:
    if isinstance(data, dict) and data.get("error"):
        err = data["error"]
        message = err.get("message") if isinstance(err, dict) else str(err)
        raise StreamError(f"{provider} reported an error: {message}; try again", provider=provider)


def parse_chat(provider: str, model: str, data: Any) -> ProviderResult:
    _check_error(data, provider)
    choices = data.get("choices") if isinstance(data, dict) else None
    first: Any = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(first, dict) or not isinstance(message, dict):
        raise wrong_shape(provider, "a chat completion (no choices[0].message)")
    content = message.get("content")
    if isinstance(content, list):  # some compatible servers send content parts
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ProviderResult(
        text=content or "",
        usage=parse_usage(provider, data.get("usage")),
        model=str(data.get("model") or model),
        finish_reason=first.get("finish_reason"),
        response_id=data.get("id"),
    )


class ChatStream:
    """Deltas from ``data:`` chunks; the last non-null ``usage`` wins; ends at ``[DONE]``."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider, self.model = provider, model
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.response_id: str | None = None
        self.done = False

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if event.data.strip() == "[DONE]":
            self.done = True
            return []
        data = event.json()
        _check_error(data, self.provider)
        self.response_id = data.get("id") or self.response_id
        self.model = data.get("model") or self.model
        if data.get("usage"):
            self.usage = parse_usage(self.provider, data["usage"])
        out: list[StreamEvent] = []
        for choice in data.get("choices") or ():
            delta = (choice.get("delta") or {}).get("content")
            if delta:
                out.append(StreamEvent(delta=delta))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def partial_usage(self) -> Usage | None:
        return self.usage

    def finish(self) -> StreamEvent:
        if not self.done and self.finish_reason is None:
            raise StreamError(f"the {self.provider} stream ended before it finished: try again")
        return StreamEvent(
            usage=self.usage or Usage(),
            finish_reason=self.finish_reason,
            response_id=self.response_id,
            model=self.model,
            done=True,
        )


def stream_parser(provider: str, model: str) -> ChatStream:
    return ChatStream(provider, model)


def models_request(provider: str, base_url: str) -> WireRequest:
    return WireRequest("GET", base_url + "/models")


def parse_models(data: Any) -> tuple[list[str], WireRequest | None]:
    items = data.get("data") if isinstance(data, dict) else None
    return [str(m.get("id")) for m in items or () if isinstance(m, dict)], None
