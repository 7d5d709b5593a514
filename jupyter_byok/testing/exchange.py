"""One exchange with a fake provider: auth check, scripted fault, latency, then the answer.

Each provider's answer is built here from :mod:`jupyter_byok.testing.wire`; the server and
its configuration live in :mod:`jupyter_byok.testing.fake`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .abuse import ABUSE_FAULTS
from .wire import Answer, UsagePlan, compact_json, error_response, sse

if TYPE_CHECKING:
    from .fake import FakeProviders, _Handler

__all__ = ["MODELS", "Exchange", "Fault", "RecordedRequest"]

MODELS: dict[str, list[str]] = {
    "openai": ["gpt-4o-mini", "gpt-4o", "gpt-5-mini"],
    "compat": ["llama3.2", "qwen2.5"],
    "xai": ["grok-4.3", "grok-code-fast-1"],
    "anthropic": ["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-7"],
    "gemini": ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"],
}
#: fault kinds that change a stream's body instead of its status
STREAM_FAULTS = ("drop_stream", "malformed_chunk", "stream_error")
OTHER_FAULTS = ("slow_first_byte", "drop_connection", *ABUSE_FAULTS)


@dataclass
class RecordedRequest:
    provider: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names; auth values kept so tests can check them
    body: Any
    time: float

    @property
    def auth(self) -> str:
        """The credential sent, in whichever header this provider reads it from."""
        h = self.headers
        bearer = h.get("authorization", "")
        bearer = bearer[7:] if bearer.lower().startswith("bearer ") else bearer
        return h.get("x-api-key") or h.get("x-goog-api-key") or bearer


@dataclass
class Fault:
    kind: str
    times: int = 1
    opts: dict[str, Any] = field(default_factory=dict)
    endpoint: str = "any"  # any | chat | models


class Drop(Exception):
    """Close the connection now, without a (complete) answer."""


class Exchange:
    """One request to one provider: auth, faults, latency, then the provider's answer."""

    def __init__(
        self,
        fake: FakeProviders,
        h: _Handler,
        provider: str,
        path: str,
        record: RecordedRequest,
        plan: UsagePlan,
        latency: float,
    ) -> None:
        self.fake, self.h, self.provider, self.path = fake, h, provider, path
        self.record, self.plan, self.latency = record, plan, latency
        self.body: dict[str, Any] = record.body if isinstance(record.body, dict) else {}
        prefix = {"anthropic": "req_", "gemini": "", "tavily": ""}.get(provider, "req_")
        self.request_id = fake._next_id(prefix or "rid-")
        self.model = ""
        self.fault: Fault | None = None

    # -- plumbing -------------------------------------------------------------------
    def id_headers(self) -> dict[str, str]:
        rid = self.request_id
        if self.provider in ("openai", "compat", "xai"):
            return {
                "x-request-id": rid,
                "openai-processing-ms": "1",
                "x-ratelimit-limit-requests": "10000",
                "x-ratelimit-remaining-requests": "9999",
                "x-ratelimit-reset-requests": "6ms",
            }
        if self.provider == "anthropic":
            return {
                "request-id": rid,
                "anthropic-ratelimit-requests-limit": "4000",
                "anthropic-ratelimit-requests-remaining": "3999",
            }
        if self.provider == "gemini":
            return {"x-goog-request-id": rid}
        return {}

    def send_json(self, status: int, body: Any, extra: dict[str, str] | None = None) -> None:
        headers = self.id_headers()
        headers.update(extra or {})
        send_json(self.h, status, body, headers)

    def error(self, kind: str, **opts: Any) -> None:
        extra: dict[str, str] = {}
        if "retry_after" in opts:
            extra["retry-after"] = str(opts["retry_after"])
        elif kind in ("rate_limit",) and "retry_after_ms" not in opts:
            extra["retry-after"] = "0"
        if "retry_after_ms" in opts:
            extra["retry-after-ms"] = str(opts["retry_after_ms"])
        if "should_retry" in opts:
            extra["x-should-retry"] = "true" if opts["should_retry"] else "false"
        extra.update(opts.get("headers") or {})
        status, body = error_response(
            self.provider,
            kind,
            request_id=self.request_id,
            model=self.model,
            key=self.record.auth,
            detail=str(opts.get("detail", "bad request")),
            status=opts.get("status"),
            message=opts.get("message"),
        )
        if self.provider == "anthropic" and kind == "overloaded" and not opts.get("status"):
            status = 529
        self.send_json(status, body, extra)

    def start_stream(self, content_type: str = "text/event-stream") -> None:
        h = self.h
        h.send_response(200)
        h.send_header("content-type", content_type)
        h.send_header("transfer-encoding", "chunked")
        h.send_header("cache-control", "no-cache")
        for name, value in self.id_headers().items():
            h.send_header(name, value)
        h.end_headers()

    def write_chunk(self, data: bytes) -> None:
        self.h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.h.wfile.flush()

    def end_stream(self) -> None:
        self.h.wfile.write(b"0\r\n\r\n")
        self.h.wfile.flush()

    def stream_frames(self, frames: list[bytes], error_frame: bytes) -> None:
        """Send frames, applying a stream fault (drop, malformed chunk, error) if one is set."""
        self.start_stream()
        fault = self.fault if self.fault and self.fault.kind in STREAM_FAULTS else None
        after = int(fault.opts.get("after", 2)) if fault else -1
        for i, frame in enumerate(frames):
            if fault is not None and i == after:
                if fault.kind == "drop_stream":
                    self.h.wfile.flush()
                    raise Drop
                if fault.kind == "malformed_chunk":
                    crlf = self.provider == "gemini"
                    self.write_chunk(b"data: {not json" + (b"\r\n\r\n" if crlf else b"\n\n"))
                if fault.kind == "stream_error":
                    self.write_chunk(error_frame)
                    self.end_stream()
                    return
            self.write_chunk(frame)
        self.end_stream()

    # -- dispatch ------------------------------------------------------------------
    def run(self) -> None:
        """The whole exchange, blocking (the server does :meth:`begin`, an async wait of that
        many seconds, then :meth:`respond`)."""
        delay = self.begin()
        if delay > 0:
            time.sleep(delay)
        self.respond()

    def begin(self) -> float:
        """Take this request's fault; the seconds to wait before the first byte."""
        endpoint = "models" if self.h.command == "GET" else "chat"
        self.model = str(self.body.get("model", "")) or self.path_model()
        self.fault = self.fake._take_fault(self.provider, endpoint)
        fault = self.fault
        if fault is not None and fault.kind == "slow_first_byte":
            return float(fault.opts.get("delay", 1.0))
        return float(self.latency or 0.0)

    def respond(self) -> None:
        """After the wait: the whole answer, written without blocking (raises Drop to hang up)."""
        fault = self.fault
        if fault is not None and fault.kind == "drop_connection":
            raise Drop
        auth_failure = self.check_auth()
        if auth_failure == "version":
            self.bad_request("anthropic-version: header is required")
            return
        if auth_failure:
            self.error(auth_failure)
            return
        if fault is not None and fault.kind not in (*STREAM_FAULTS, *OTHER_FAULTS):
            self.error(fault.kind, **fault.opts)
            return
        from .batches import handle_batch

        if handle_batch(self):
            return
        if self.provider in ("openai", "xai", "compat"):
            self.on_openai()
        else:
            getattr(self, "on_" + self.provider)()

    def path_model(self) -> str:
        if ":" in self.path and "/models/" in self.path:
            return self.path.split("/models/", 1)[1].split(":", 1)[0]
        return ""

    def check_auth(self) -> str | None:
        """The error kind for a missing or refused credential, as this provider checks it."""
        headers, provider = self.record.headers, self.provider
        if provider == "compat":
            return None
        if provider == "anthropic" and "anthropic-version" not in headers:
            return "version"
        if provider == "gemini" and self.record.query.get("upload_id"):
            return None  # an upload URL is its own credential (checked in .batches)
        if provider == "gemini":
            key = headers.get("x-goog-api-key") or (self.record.query.get("key") or [""])[0]
        elif provider == "anthropic":
            key = headers.get("x-api-key", "")
            bearer = headers.get("authorization", "")
            if not key and bearer.lower().startswith("bearer "):
                key = bearer[7:]
        else:
            bearer = headers.get("authorization", "")
            key = bearer[7:] if bearer.lower().startswith("bearer ") else ""
        if not key.strip():
            return "missing_key"
        allowed = self.fake._keys.get(provider)
        if allowed is not None and key not in allowed:
            return "auth"
        if self.fault is not None and self.fault.kind == "auth":
            return "auth"
        return None

    def answer(self, messages: list[tuple[str, str]], max_tokens: int | None) -> Answer:
        texts = [text for _, text in messages]
        users = [text for role, text in messages if role == "user"]
        return Answer.for_prompt(texts, users[-1] if users else "", max_tokens, self.plan)

    def bad_request(self, detail: str) -> None:
        self.error("bad_request", detail=detail)

    # -- OpenAI, xAI, OpenAI-compatible ---------------------------------------------------
    def on_openai(self) -> None:
        p = self.path[3:] if self.path.startswith("/v1/") else self.path
        if self.h.command == "GET" and p == "/models":
            data = [
                {"id": m, "object": "model", "created": 1715367049, "owned_by": "system"}
                for m in MODELS["xai" if self.provider == "xai" else self.provider]
            ]
            self.send_json(200, {"object": "list", "data": data})
            return
        if self.h.command == "GET" and p == "/api-key" and self.provider == "xai":
            key = self.record.auth
            self.send_json(
                200,
                {
                    "redacted_api_key": f"{key[:4]}****{key[-4:]}",
                    "user_id": "user-fake",
                    "name": "fake key",
                    "acls": ["api-key:model:*", "api-key:endpoint:*"],
                    "api_key_blocked": False,
                    "api_key_disabled": False,
                    "team_blocked": False,
                },
            )
            return
        if self.h.command != "POST" or p != "/chat/completions":
            self.error("not_found", message=f"Unknown request URL: {self.h.command} {p}")
            return
        msgs = self.body.get("messages")
        if not self.model or not isinstance(msgs, list) or not msgs:
            self.bad_request("you must provide a model parameter and a non-empty messages array")
            return
        if self.model.startswith("missing"):
            self.error("not_found")
            return
        pairs = [(str(m.get("role")), _content_text(m.get("content"))) for m in msgs]
        limit = self.body.get("max_completion_tokens", self.body.get("max_tokens"))
        ans = self.answer(pairs, limit)
        rid = self.fake._next_id("chatcmpl-")
        base = {"id": rid, "created": 1727346142, "model": self.model}
        base["system_fingerprint"] = "fp_fake"
        finish = ans.finish
        if not self.body.get("stream"):
            self.send_json(
                200,
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": ans.text, "refusal": None},
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": ans.openai_usage(self.provider),
                    "service_tier": "default",
                },
            )
            return
        include_usage = bool((self.body.get("stream_options") or {}).get("include_usage"))
        chunk = {**base, "object": "chat.completion.chunk"}
        usage_null: dict[str, Any] = {"usage": None} if include_usage else {}

        def frame(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return sse({**chunk, "choices": [choice], **usage_null})

        frames = [frame({"role": "assistant", "content": "", "refusal": None})]
        frames += [frame({"content": d}) for d in ans.deltas()]
        frames.append(frame({}, finish))
        if include_usage:
            frames.append(sse({**chunk, "choices": [], "usage": ans.openai_usage(self.provider)}))
        frames.append(b"data: [DONE]\n\n")
        _, err = error_response(self.provider, "server_error", request_id=self.request_id)
        if self.provider == "xai":
            err = {"error": {"message": err["error"], "type": "server_error", "code": None}}
        self.stream_frames(frames, sse(err))

    # -- Anthropic ------------------------------------------------------------------
    def on_anthropic(self) -> None:
        p = self.path
        if self.h.command == "GET" and p == "/v1/models":
            data = [
                {
                    "type": "model",
                    "id": m,
                    "display_name": m.replace("-", " ").title(),
                    "created_at": "2025-10-22T00:00:00Z",
                }
                for m in MODELS["anthropic"]
            ]
            self.send_json(
                200,
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"],
                    "last_id": data[-1]["id"],
                },
            )
            return
        if self.h.command != "POST" or p != "/v1/messages":
            self.error("not_found", message=f"Not found: {p}")
            return
        msgs = self.body.get("messages")
        if not isinstance(msgs, list) or not msgs or not self.model:
            self.bad_request("messages: Field required")
            return
        if "max_tokens" not in self.body:
            self.bad_request("max_tokens: Field required")
            return
        if any(m.get("role") == "system" for m in msgs):
            self.bad_request(
                'messages: Unexpected role "system". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.'
            )
            return
        if self.model.startswith("missing"):
            self.error("not_found")
            return
        system = self.body.get("system") or ""
        pairs = [("system", _content_text(system))] if system else []
        pairs += [(str(m.get("role")), _content_text(m.get("content"))) for m in msgs]
        ans = self.answer(pairs, int(self.body["max_tokens"]))
        mid = self.fake._next_id("msg_fake")
        stop = "max_tokens" if ans.finish == "length" else "end_turn"
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": ans.anthropic_content(),
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": ans.anthropic_usage(),
        }
        if not self.body.get("stream"):
            self.send_json(200, message)
            return
        start_usage = ans.anthropic_usage(output=0)
        start_usage["output_tokens"] = 1
        frames = [
            sse(
                {
                    "type": "message_start",
                    "message": {
                        **message,
                        "content": [],
                        "stop_reason": None,
                        "usage": start_usage,
                    },
                },
                "message_start",
            )
        ]
        index = 0
        if self.plan.reasoning:
            frames += [
                sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                    },
                    "content_block_start",
                ),
                sse(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {
                            "type": "thinking_delta",
                            "thinking": ans.anthropic_content()[0]["thinking"],
                        },
                    },
                    "content_block_delta",
                ),
                sse(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl"},
                    },
                    "content_block_delta",
                ),
                sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            ]
            index = 1
        frames.append(
            sse(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            )
        )
        frames.append(sse({"type": "ping"}, "ping"))
        frames += [
            sse(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": d},
                },
                "content_block_delta",
            )
            for d in ans.deltas()
        ]
        frames.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        frames.append(
            sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": ans.anthropic_usage(),
                },
                "message_delta",
            )
        )
        frames.append(sse({"type": "message_stop"}, "message_stop"))
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        self.stream_frames(frames, sse(error, "error"))

    # -- Gemini -----------------------------------------------------------------------
    def on_gemini(self) -> None:
        p = self.path
        if self.h.command == "GET" and p.rstrip("/").endswith("/models"):
            models = [
                {
                    "name": f"models/{m}",
                    "version": "001",
                    "displayName": m,
                    "inputTokenLimit": 1048576,
                    "outputTokenLimit": 65536,
                    "supportedGenerationMethods": ["generateContent", "countTokens"],
                }
                for m in MODELS["gemini"]
            ]
            self.send_json(200, {"models": models})
            return
        method = p.rsplit(":", 1)[-1] if ":" in p else ""
        if self.h.command != "POST" or method not in ("generateContent", "streamGenerateContent"):
            self.error("not_found", message=f"Method not found: {p}")
            return
        contents = self.body.get("contents")
        if not isinstance(contents, list) or not contents:
            self.bad_request("* GenerateContentRequest.contents: contents is not specified")
            return
        if self.model.startswith("missing"):
            self.error("not_found")
            return
        system = self.body.get("systemInstruction") or {}
        pairs = [("system", _gemini_text(system))] if system else []
        for c in contents:
            role = "assistant" if c.get("role") == "model" else "user"
            pairs.append((role, _gemini_text(c)))
        config = self.body.get("generationConfig") or {}
        ans = self.answer(pairs, config.get("maxOutputTokens"))
        finish = "MAX_TOKENS" if ans.finish == "length" else "STOP"
        rid = self.fake._next_id("resp-")
        if method == "generateContent":
            self.send_json(
                200,
                {
                    "candidates": [
                        {
                            "content": {"parts": [{"text": ans.text}], "role": "model"},
                            "finishReason": finish,
                            "index": 0,
                        }
                    ],
                    "usageMetadata": ans.gemini_usage(),
                    "modelVersion": self.model,
                    "responseId": rid,
                },
            )
            return
        if self.record.query.get("alt") != ["sse"]:
            self.bad_request("the fake only streams with ?alt=sse")
            return
        deltas = ans.deltas()
        frames = []
        for i, d in enumerate(deltas):
            cand: dict[str, Any] = {
                "content": {"parts": [{"text": d}], "role": "model"},
                "index": 0,
            }
            if i == len(deltas) - 1:
                cand["finishReason"] = finish
            frames.append(
                sse(
                    {
                        "candidates": [cand],
                        "usageMetadata": ans.gemini_usage(output=i + 1),
                        "modelVersion": self.model,
                        "responseId": rid,
                    },
                    crlf=True,
                )
            )
        _, err = error_response("gemini", "unavailable", request_id=self.request_id)
        if self.fault is not None and self.fault.opts.get("raw"):
            # after the stream started, Gemini may send a plain (multi-line) JSON error body
            self.stream_frames(frames, json.dumps(err, indent=2).encode() + b"\r\n")
        else:
            self.stream_frames(frames, sse(err, crlf=True))

    # -- Tavily ---------------------------------------------------------------------
    def on_tavily(self) -> None:
        p = self.path
        if self.h.command == "GET" and p == "/usage":
            self.send_json(
                200,
                {
                    "key": {"usage": 12, "limit": 1000},
                    "account": {"current_plan": "Researcher", "plan_usage": 12, "plan_limit": 1000},
                },
            )
            return
        if self.h.command != "POST" or p != "/search":
            self.error("not_found")
            return
        query = self.body.get("query")
        if not isinstance(query, str) or not query.strip():
            self.bad_request("Query is missing.")
            return
        depth = self.body.get("search_depth", "basic")
        if depth not in ("basic", "advanced", "fast", "ultra-fast"):
            self.bad_request(f"Invalid search depth {depth!r}.")
            return
        n = int(self.body.get("max_results", 5))
        words = query.split()
        results = [
            {
                "title": f"Result {i + 1} for {query}",
                "url": f"https://example.com/{'-'.join(words)}/{i + 1}",
                "content": f"About {query} ({i + 1}).",
                "score": round(0.99 - 0.1 * i, 2),
                "raw_content": None,
            }
            for i in range(max(0, min(n, 20)))
        ]
        body: dict[str, Any] = {
            "query": query,
            "follow_up_questions": None,
            "answer": f"An answer about {query}." if self.body.get("include_answer") else None,
            "images": [],
            "results": results,
            "response_time": 0.01,
            "request_id": self.request_id,
        }
        if self.body.get("include_usage"):
            body["usage"] = {"credits": 2 if depth == "advanced" else 1}
        self.send_json(200, body)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _gemini_text(content: dict[str, Any]) -> str:
    parts = content.get("parts") or []
    return " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def send_json(h: _Handler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    data = compact_json(body).encode()
    h.send_response(status)
    h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(data)))
    for name, value in (headers or {}).items():
        h.send_header(name, value)
    h.end_headers()
    h.wfile.write(data)
