"""Google Gemini (Developer API) ``generateContent`` and ``streamGenerateContent?alt=sse``.

The key goes in the ``x-goog-api-key`` header, never in the URL (URLs end up in logs).
Usage: ``promptTokenCount`` includes cached content; output is ``candidatesTokenCount +
thoughtsTokenCount`` (thoughts are billed as output). Streams repeat cumulative
``usageMetadata`` on every chunk: the last one wins. Streams have no end sentinel: the
chunk with a ``finishReason`` is the last.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ModelIdError, StreamError
from ..types import Message, ProviderResult, StreamEvent, Usage
from .base import SSEEvent, WireRequest, count, wrong_shape

__all__ = [
    "API_VERSION",
    "auth_headers",
    "chat_request",
    "models_request",
    "parse_chat",
    "parse_models",
    "parse_usage",
    "stream_parser",
]

API_VERSION = "v1beta"
_CONFIG = {
    "temperature": "temperature",
    "max_tokens": "maxOutputTokens",
    "top_p": "topP",
    "top_k": "topK",
    "stop": "stopSequences",
    "seed": "seed",
}


#: a model name as it may appear in the URL path: letters, digits, ``.``, ``-`` and ``_``
#: (``gemini-2.5-flash``, ``tunedModels/my-model-123``); nothing that could climb out of
#: ``/v1beta/models/`` (``..``, ``/``, ``%``, ``?``, ``#``, ``:``, spaces)
_MODEL_NAME = re.compile(r"(?:models/|tunedModels/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def model_path(provider: str, model: str) -> str:
    """``models/<model>`` for the URL path, or a 400 for a name outside the safe set."""
    if _MODEL_NAME.fullmatch(model) is None:
        raise ModelIdError(
            f"{provider} model name {model[:80]!r} is not allowed: use letters, digits, '.', "
            "'-' and '_' only (e.g. gemini-2.5-flash)"
        )
    return model if model.startswith(("models/", "tunedModels/")) else "models/" + model


def auth_headers(provider: str, key: Any) -> dict[str, str]:
    return {"x-goog-api-key": key.reveal()} if key else {}


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for name, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(name), dict):
            _merge(into[name], value)
        else:
            into[name] = value


def chat_request(
    provider: str,
    base_url: str,
    model: str,
    messages: list[Message],
    params: dict[str, Any],
    *,
    stream: bool,
) -> WireRequest:
    system = [m.content for m in messages if m.role == "system"]
    body: dict[str, Any] = {
        "contents": [
            {"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]}
            for m in messages
            if m.role != "system"
        ]
    }
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        if name in _CONFIG:
            if name == "stop" and isinstance(value, str):
                value = [value]
            config[_CONFIG[name]] = value
        else:
            extra[name] = value
    if config:
        body["generationConfig"] = config
    _merge(body, extra)
    method = "streamGenerateContent" if stream else "generateContent"
    url = f"{base_url}/{API_VERSION}/{model_path(provider, model)}:{method}"
    return WireRequest("POST", url, {}, body, {"alt": "sse"} if stream else None)


def parse_usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    thoughts = count(raw.get("thoughtsTokenCount"))
    return Usage(
        input_tokens=count(raw.get("promptTokenCount")) + count(raw.get("toolUsePromptTokenCount")),
        cached_input_tokens=count(raw.get("cachedContentTokenCount")),
        output_tokens=count(raw.get("candidatesTokenCount")) + thoughts,
        reasoning_tokens=thoughts,
    )


def _candidate_text(candidate: dict[str, Any]) -> str:
    parts = (candidate.get("content") or {}).get("parts") or ()
    return "".join(
        str(p.get("text", "")) for p in parts if isinstance(p, dict) and not p.get("thought")
    )


def _check_error(data: Any) -> None:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        raise StreamError(
            f"gemini reported {err.get('status', 'an error')}: {err.get('message', '')}; try again",
            provider="gemini",
            error_type=err.get("status"),
        )


def parse_chat(provider: str, model: str, data: Any) -> ProviderResult:
    _check_error(data)
    if not isinstance(data, dict):
        raise wrong_shape(provider, "a Gemini GenerateContentResponse (not a JSON object)")
    candidates = data.get("candidates")
    feedback: Any = data.get("promptFeedback")
    blocked = isinstance(feedback, dict) and feedback.get("blockReason")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        first = candidates[0]
    elif blocked and not candidates:
        first = {}
    else:
        raise wrong_shape(provider, "a Gemini GenerateContentResponse (no candidates)")
    finish = first.get("finishReason")
    if finish is None and blocked:
        finish = "BLOCKED:" + str(feedback["blockReason"])
    return ProviderResult(
        text=_candidate_text(first),
        usage=parse_usage(data.get("usageMetadata")),
        model=str(data.get("modelVersion") or model),
        finish_reason=finish,
        response_id=data.get("responseId"),
    )


class ContentStream:
    def __init__(self, provider: str, model: str) -> None:
        self.provider, self.model = provider, model
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.response_id: str | None = None

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        data = event.json()
        _check_error(data)
        self.response_id = data.get("responseId") or self.response_id
        self.model = data.get("modelVersion") or self.model
        if data.get("usageMetadata"):
            self.usage = parse_usage(data["usageMetadata"])
        out: list[StreamEvent] = []
        for candidate in data.get("candidates") or ():
            text = _candidate_text(candidate)
            if text:
                out.append(StreamEvent(delta=text))
            if candidate.get("finishReason"):
                self.finish_reason = candidate["finishReason"]
        return out

    def partial_usage(self) -> Usage | None:
        return self.usage

    def finish(self) -> StreamEvent:
        if self.finish_reason is None:
            raise StreamError(f"the {self.provider} stream ended without a finishReason: try again")
        return StreamEvent(
            usage=self.usage or Usage(),
            finish_reason=self.finish_reason,
            response_id=self.response_id,
            model=self.model,
            done=True,
        )


def stream_parser(provider: str, model: str) -> ContentStream:
    return ContentStream(provider, model)


def models_request(provider: str, base_url: str) -> WireRequest:
    return WireRequest("GET", f"{base_url}/{API_VERSION}/models", params={"pageSize": "1000"})


def parse_models(data: Any) -> tuple[list[str], WireRequest | None]:
    items = data.get("models") if isinstance(data, dict) else None
    ids = [
        str(m.get("name", "")).removeprefix("models/") for m in items or () if isinstance(m, dict)
    ]
    return ids, None
