"""What the fake providers say: each provider's bodies, stream frames and error shapes.

Answers are deterministic so tests can assert exact numbers: the reply is ``"Echo: "``
followed by the last user message (whitespace collapsed), a "token" is a
whitespace-separated word, input tokens are the words of every message (system included),
and the extra usage a test configures (cached, cache writes, reasoning) is written in each
provider's own convention (each provider's published API reference).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Answer", "UsagePlan", "error_response", "tokens"]

PROVIDERS = ("openai", "xai", "compat", "anthropic", "gemini", "tavily")


def tokens(text: str) -> int:
    """The fake's tokenizer: one token per whitespace-separated word."""
    return len(text.split())


@dataclass
class UsagePlan:
    """Extra usage a test asks the fake to report (clamped to what the prompt allows)."""

    cached: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0
    #: xAI only: report reasoning inside ``completion_tokens`` (the other reading of its docs)
    fold_reasoning: bool = False
    #: xAI only: ticks (1e-10 USD) per token, for ``cost_in_usd_ticks``
    ticks_per_token: int = 20_000


@dataclass
class Answer:
    """The deterministic answer to one chat request, in provider-neutral numbers."""

    words: list[str]
    input_tokens: int
    finish: str  # stop | length
    plan: UsagePlan = field(default_factory=UsagePlan)

    @classmethod
    def for_prompt(
        cls, texts: list[str], last_user: str, max_tokens: int | None, plan: UsagePlan
    ) -> Answer:
        words = ["Echo:", *last_user.split()]
        finish = "stop"
        if max_tokens is not None and max_tokens >= 0 and len(words) > max_tokens:
            words, finish = words[:max_tokens], "length"
        return cls(words, sum(tokens(t) for t in texts), finish, plan)

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def output_tokens(self) -> int:
        return len(self.words)

    @property
    def cached(self) -> int:
        return min(self.plan.cached, self.input_tokens)

    @property
    def writes(self) -> tuple[int, int]:
        room = self.input_tokens - self.cached
        w5 = min(self.plan.cache_write_5m, room)
        return w5, min(self.plan.cache_write_1h, room - w5)

    def deltas(self) -> list[str]:
        return [w if i == 0 else " " + w for i, w in enumerate(self.words)]

    # -- OpenAI and xAI -------------------------------------------------------------
    def openai_usage(self, provider: str, output: int | None = None) -> dict[str, Any]:
        out = self.output_tokens if output is None else output
        reasoning = self.plan.reasoning
        w5, w1 = self.writes
        usage: dict[str, Any] = {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": out + reasoning,
            "total_tokens": self.input_tokens + out + reasoning,
            "prompt_tokens_details": {
                "cached_tokens": self.cached,
                "audio_tokens": 0,
                "cache_write_tokens": w5 + w1,
            },
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if provider == "xai":
            # xAI reports reasoning outside completion_tokens but inside total_tokens.
            if not self.plan.fold_reasoning:
                usage["completion_tokens"] = out
            usage["prompt_tokens_details"] = {
                "text_tokens": self.input_tokens,
                "audio_tokens": 0,
                "image_tokens": 0,
                "cached_tokens": self.cached,
            }
            usage["num_sources_used"] = 0
            usage["cost_in_usd_ticks"] = self.xai_ticks(out)
        return usage

    def xai_ticks(self, output: int | None = None) -> int:
        out = self.output_tokens if output is None else output
        return (self.input_tokens + out + self.plan.reasoning) * self.plan.ticks_per_token

    # -- Anthropic --------------------------------------------------------------------
    def anthropic_usage(self, output: int | None = None) -> dict[str, Any]:
        out = self.output_tokens if output is None else output
        w5, w1 = self.writes
        usage: dict[str, Any] = {
            # Anthropic's input_tokens excludes cache reads and writes.
            "input_tokens": self.input_tokens - self.cached - w5 - w1,
            "cache_creation_input_tokens": w5 + w1,
            "cache_read_input_tokens": self.cached,
            "cache_creation": {"ephemeral_5m_input_tokens": w5, "ephemeral_1h_input_tokens": w1},
            "output_tokens": out + self.plan.reasoning,
            "service_tier": "standard",
        }
        if self.plan.reasoning:
            usage["output_tokens_details"] = {"thinking_tokens": self.plan.reasoning}
        return usage

    def anthropic_content(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if self.plan.reasoning:
            thought = " ".join(["hmm"] * self.plan.reasoning)
            blocks.append({"type": "thinking", "thinking": thought, "signature": "c2lnbmF0dXJl"})
        blocks.append({"type": "text", "text": self.text})
        return blocks

    # -- Gemini -----------------------------------------------------------------------
    def gemini_usage(self, output: int | None = None) -> dict[str, Any]:
        out = self.output_tokens if output is None else output
        usage: dict[str, Any] = {
            "promptTokenCount": self.input_tokens,
            "candidatesTokenCount": out,
            "totalTokenCount": self.input_tokens + out + self.plan.reasoning,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.input_tokens}],
            "serviceTier": "standard",
        }
        if self.cached:
            usage["cachedContentTokenCount"] = self.cached
        if self.plan.reasoning:
            usage["thoughtsTokenCount"] = self.plan.reasoning
        return usage


# -- error bodies -----------------------------------------------------------------------

#: fault kind -> (HTTP status, provider-neutral meaning)
KIND_STATUS: dict[str, int] = {
    "rate_limit": 429,
    "quota": 429,
    "server_error": 500,
    "unavailable": 503,
    "overloaded": 503,
    "timeout_status": 408,
    "conflict": 409,
    "auth": 401,
    "permission": 403,
    "not_found": 404,
    "bad_request": 400,
}

_OPENAI: dict[str, tuple[str, str | None, str]] = {
    # kind: (type, code, message)
    "rate_limit": (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. "
        "Please try again in 20s.",
    ),
    "quota": (
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    "server_error": (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "unavailable": ("server_error", None, "The engine is currently overloaded."),
    "overloaded": ("server_error", None, "The engine is currently overloaded."),
    "timeout_status": ("server_error", None, "Request timed out."),
    "conflict": ("invalid_request_error", "conflict", "Conflict, please retry."),
    "auth": ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: {masked}."),
    "missing_key": (
        "invalid_request_error",
        None,
        "You didn't provide an API key. You need to provide your API key in an Authorization "
        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    ),
    "permission": (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    "not_found": (
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    "bad_request": ("invalid_request_error", None, "Invalid request: {detail}"),
}

_ANTHROPIC: dict[str, tuple[int, str, str]] = {
    "rate_limit": (
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit",
    ),
    "quota": (
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
        "Billing to upgrade or purchase credits.",
    ),
    "server_error": (500, "api_error", "Internal server error"),
    "unavailable": (503, "api_error", "Service unavailable"),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "timeout_status": (408, "timeout_error", "Request timeout"),
    "conflict": (409, "api_error", "Conflict"),
    "auth": (401, "authentication_error", "invalid x-api-key"),
    "missing_key": (401, "authentication_error", "x-api-key header is required"),
    "permission": (
        403,
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    "not_found": (404, "not_found_error", "model: {model}"),
    "bad_request": (400, "invalid_request_error", "{detail}"),
}

_GEMINI: dict[str, tuple[int, str, str]] = {
    "rate_limit": (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    "quota": (
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    "server_error": (500, "INTERNAL", "An internal error has occurred. Please retry."),
    "unavailable": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "overloaded": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "timeout_status": (408, "DEADLINE_EXCEEDED", "Request timed out."),
    "conflict": (409, "ABORTED", "The operation was aborted."),
    "auth": (400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
    "missing_key": (
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
    ),
    "permission": (403, "PERMISSION_DENIED", "The caller does not have permission"),
    "not_found": (
        404,
        "NOT_FOUND",
        "models/{model} is not found for API version v1beta, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods.",
    ),
    "bad_request": (400, "INVALID_ARGUMENT", "{detail}"),
}

_XAI: dict[str, tuple[int, str, str]] = {
    "rate_limit": (429, "Too many requests", "You have exceeded your rate limit."),
    "quota": (
        429,
        "insufficient_quota",
        "Your team has either used all available credits or reached its monthly spending limit.",
    ),
    "server_error": (500, "Internal error", "Internal server error"),
    "unavailable": (503, "Service unavailable", "Service temporarily unavailable"),
    "overloaded": (503, "Service unavailable", "Service temporarily unavailable"),
    "timeout_status": (408, "Request timeout", "Request timed out"),
    "conflict": (409, "Conflict", "Conflict"),
    "auth": (
        400,
        "Client specified an invalid argument",
        "Incorrect API key provided: {masked}. You can obtain an API key from "
        "https://console.x.ai.",
    ),
    "missing_key": (
        400,
        "Client specified an invalid argument",
        "No API key provided. You can obtain an API key from https://console.x.ai.",
    ),
    "permission": (403, "Permission denied", "The API key does not have access to this model."),
    "not_found": (404, "Some requested entity was not found", "The model {model} does not exist."),
    "bad_request": (400, "Client specified an invalid argument", "{detail}"),
}

_TAVILY: dict[str, tuple[int, str]] = {
    "rate_limit": (429, "Rate limit exceeded. Please try again later."),
    "quota": (
        432,
        "This request exceeds your plan's set usage limit. Please upgrade your plan or "
        "contact support@tavily.com",
    ),
    "server_error": (500, "Internal server error"),
    "unavailable": (503, "Service unavailable"),
    "overloaded": (503, "Service unavailable"),
    "timeout_status": (408, "Request timeout"),
    "conflict": (409, "Conflict"),
    "auth": (401, "Unauthorized: missing or invalid API key."),
    "missing_key": (401, "Unauthorized: missing or invalid API key."),
    "permission": (403, "Forbidden"),
    "not_found": (404, "Not found"),
    "bad_request": (400, "{detail}"),
}


def mask_key(key: str) -> str:
    """How OpenAI and xAI echo a refused key: a few characters each side."""
    return f"{key[:3]}***{key[-2:]}" if len(key) > 8 else "***"


def error_response(
    provider: str,
    kind: str,
    *,
    request_id: str,
    model: str = "",
    key: str = "",
    detail: str = "bad request",
    status: int | None = None,
    message: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """(status, body) of the error ``kind`` as ``provider`` sends it."""
    fill = {"model": model, "masked": mask_key(key), "detail": detail}
    if provider in ("openai", "compat"):
        etype, code, text = _OPENAI.get(kind, _OPENAI["bad_request"])
        code_status = 401 if kind == "missing_key" else KIND_STATUS.get(kind, 400)
        body: dict[str, Any] = {
            "error": {
                "message": message or text.format(**fill),
                "type": etype,
                "param": None,
                "code": code,
            }
        }
        return status or code_status, body
    if provider == "xai":
        code_status, code_text, text = _XAI.get(kind, _XAI["bad_request"])
        return status or code_status, {"code": code_text, "error": message or text.format(**fill)}
    if provider == "anthropic":
        code_status, etype, text = _ANTHROPIC.get(kind, _ANTHROPIC["bad_request"])
        return status or code_status, {
            "type": "error",
            "error": {"type": etype, "message": message or text.format(**fill)},
            "request_id": request_id,
        }
    if provider == "gemini":
        code_status, gstatus, text = _GEMINI.get(kind, _GEMINI["bad_request"])
        final = status or code_status
        error: dict[str, Any] = {
            "code": final,
            "message": message or text.format(**fill),
            "status": gstatus,
        }
        if kind == "auth":
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ]
        elif kind in ("quota", "rate_limit"):
            per = "PerDay" if kind == "quota" else "PerMinute"
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/"
                            "generate_content_free_tier_requests",
                            "quotaId": f"GenerateRequests{per}PerProjectPerModel-FreeTier",
                        }
                    ],
                },
                {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
            ]
        return final, {"error": error}
    code_status, text = _TAVILY.get(kind, _TAVILY["bad_request"])
    return status or code_status, {"detail": {"error": message or text.format(**fill)}}


#: ``json.dumps(obj, separators=(",", ":"))`` without building an encoder per call
compact_json = json.JSONEncoder(separators=(",", ":")).encode


def sse(data: dict[str, Any] | str, event: str | None = None, crlf: bool = False) -> bytes:
    """One SSE frame; ``crlf`` is Gemini's framing."""
    payload = data if isinstance(data, str) else compact_json(data)
    nl = "\r\n" if crlf else "\n"
    head = f"event: {event}{nl}" if event else ""
    return f"{head}data: {payload}{nl}{nl}".encode()
