"""Value objects passed between the engine, providers, ledger and front ends.

These are pure values: identity and storage live in the ledger. Token counts follow one
convention for every provider: ``input_tokens`` counts *all* prompt tokens including the
cached ones, ``cached_input_tokens`` is the part read from the provider's prompt cache,
and ``output_tokens`` includes ``reasoning_tokens``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, TypedDict

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "Attempt",
    "Completion",
    "CompletionDict",
    "Message",
    "MessageDict",
    "ProviderResult",
    "Request",
    "RequestDict",
    "SearchResult",
    "SearchResultDict",
    "StreamEvent",
    "Usage",
    "UsageDict",
]

Role = Literal["system", "user", "assistant"]

#: the output-token limit of a cloud call that sets no ``max_tokens``: what Anthropic's
#: API requires us to send, and the upper bound estimates and budgets assume for every
#: provider (local models have their own smaller default, see providers/local/_params.py)
DEFAULT_MAX_TOKENS = 1024


# The JSON forms of the values below (``to_dict`` builds them, ``from_dict`` reads them):
# what crosses REST between a kernel and the server (see server/_replies.py).
class MessageDict(TypedDict):
    role: Role
    content: str


class UsageDict(TypedDict):
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    reasoning_tokens: int
    search_credits: float
    provider_cost_usd: str | None


class RequestDict(TypedDict):
    """What a kernel posts to ``/byok/complete`` (a ``CompleteBody``, see server/_wire)."""

    model: str
    messages: list[MessageDict]
    params: dict[str, Any]
    stream: bool
    feature: str
    origin: dict[str, str]
    cache: bool


class CompletionDict(TypedDict):
    """``POST /byok/complete``'s reply, and a stream's ``done`` event."""

    text: str
    model: str
    provider: str
    usage: UsageDict
    cost_usd: str | None
    cost_source: str
    finish_reason: str | None
    request_id: str
    response_id: str | None
    latency_s: float
    ttft_s: float | None
    cached: bool
    ledger_id: str | None
    warnings: list[str]


class SearchResultDict(TypedDict):
    """``POST /byok/search``'s reply (``search_credits`` repeats ``usage.search_credits``
    for readers of the older, flat form)."""

    query: str
    results: list[dict[str, Any]]
    answer: str | None
    usage: UsageDict
    search_credits: float
    cost_usd: str | None
    cost_source: str
    request_id: str
    response_id: str | None
    latency_s: float
    cached: bool
    warnings: list[str]


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Message:
    role: Role
    content: str

    def to_dict(self) -> MessageDict:
        return {"role": self.role, "content": self.content}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """The inverse of :meth:`to_dict`; ``role`` defaults to ``user``."""
        return cls(data.get("role", "user"), str(data["content"]))


@dataclass
class Usage:
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0  # 5-minute TTL writes (Anthropic) or generic cache writes
    cache_write_1h_tokens: int = 0  # 1-hour TTL writes (Anthropic)
    output_tokens: int = 0
    reasoning_tokens: int = 0
    search_credits: float = 0.0
    #: what the provider itself says the call cost (xAI's ``cost_in_usd_ticks``)
    provider_cost_usd: Decimal | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> UsageDict:
        # built by hand, not dataclasses.asdict: this is on every reply of the server
        return {
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_write_1h_tokens": self.cache_write_1h_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "search_credits": self.search_credits,
            "provider_cost_usd": _money(self.provider_cost_usd),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        """The inverse of :meth:`to_dict` (unknown fields are ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        cost = known.pop("provider_cost_usd", None)
        return cls(**known, provider_cost_usd=_decimal(cost))


@dataclass
class Request:
    """One logical call, as the engine sees it (the key is never part of it)."""

    model: str
    messages: list[Message]
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    feature: str = "api"
    origin: dict[str, str] = field(default_factory=dict)
    cache: bool = False

    def to_dict(self) -> RequestDict:
        """The body a kernel posts to ``/byok/complete``."""
        return {
            "model": self.model,
            "messages": [m.to_dict() for m in self.messages],
            "params": self.params,
            "stream": self.stream,
            "feature": self.feature,
            "origin": self.origin,
            "cache": self.cache,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Request:
        """The inverse of :meth:`to_dict`, from a body already checked against its shape
        (server/_wire.CompleteBody): absent fields take their defaults, a message's
        ``role`` defaults to ``user``, and fields a Request does not hold are ignored."""
        return cls(
            model=data.get("model") or "",
            messages=[Message.from_dict(m) for m in data.get("messages") or ()],
            params=dict(data.get("params") or {}),
            stream=bool(data.get("stream", False)),
            feature=data.get("feature") or "api",
            origin=dict(data.get("origin") or {}),
            cache=bool(data.get("cache", False)),
        )


@dataclass
class Completion:
    text: str
    model: str
    provider: str
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal | None = None
    cost_source: str = "unknown"
    finish_reason: str | None = None
    request_id: str = ""
    response_id: str | None = None
    latency_s: float = 0.0
    ttft_s: float | None = None
    cached: bool = False
    ledger_id: str | None = None
    #: budget warnings that applied to this call (near a limit), and a ``ledger:`` warning
    #: if its row could not be written (kept pending; see Engine._write_rows)
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> CompletionDict:
        return {
            "text": self.text,
            "model": self.model,
            "provider": self.provider,
            "usage": self.usage.to_dict(),
            "cost_usd": _money(self.cost_usd),
            "cost_source": self.cost_source,
            "finish_reason": self.finish_reason,
            "request_id": self.request_id,
            "response_id": self.response_id,
            "latency_s": self.latency_s,
            "ttft_s": self.ttft_s,
            "cached": self.cached,
            "ledger_id": self.ledger_id,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Completion:
        """The inverse of :meth:`to_dict`: a completion from the server's JSON or the cache."""
        return cls(
            text=str(data.get("text", "")),
            model=str(data.get("model", "")),
            provider=str(data.get("provider", "")),
            usage=Usage.from_dict(dict(data.get("usage") or {})),
            cost_usd=_decimal(data.get("cost_usd")),
            cost_source=str(data.get("cost_source", "unknown")),
            finish_reason=data.get("finish_reason"),
            request_id=str(data.get("request_id", "")),
            response_id=data.get("response_id"),
            latency_s=float(data.get("latency_s") or 0.0),
            ttft_s=data.get("ttft_s"),
            cached=bool(data.get("cached", False)),
            ledger_id=data.get("ledger_id"),
            warnings=[str(w) for w in data.get("warnings") or ()],
        )


@dataclass
class StreamEvent:
    """A piece of a streamed answer: text deltas, then one final event with usage."""

    delta: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    response_id: str | None = None
    model: str | None = None
    done: bool = False


@dataclass
class SearchResult:
    query: str
    results: list[dict[str, Any]] = field(default_factory=list)
    answer: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal | None = None
    cost_source: str = "unknown"
    request_id: str = ""
    response_id: str | None = None
    latency_s: float = 0.0
    cached: bool = False
    #: e.g. that the ledger could not record the search (see Engine._write_rows)
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{r.get('title', '')}: {r.get('url', '')}" for r in self.results]
        if self.answer:
            lines.insert(0, self.answer)
        return "\n".join(lines)

    def to_dict(self) -> SearchResultDict:
        return {
            "query": self.query,
            "results": self.results,
            "answer": self.answer,
            "usage": self.usage.to_dict(),
            "search_credits": self.usage.search_credits,
            "cost_usd": _money(self.cost_usd),
            "cost_source": self.cost_source,
            "request_id": self.request_id,
            "response_id": self.response_id,
            "latency_s": self.latency_s,
            "cached": self.cached,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchResult:
        """The inverse of :meth:`to_dict` (also reads the older flat form, which had
        ``search_credits`` and no ``usage``)."""
        usage = data.get("usage")
        return cls(
            query=str(data.get("query", "")),
            results=list(data.get("results") or ()),
            answer=data.get("answer"),
            usage=Usage.from_dict(usage)
            if usage is not None
            else Usage(search_credits=float(data.get("search_credits") or 0)),
            cost_usd=_decimal(data.get("cost_usd")),
            cost_source=str(data.get("cost_source", "unknown")),
            request_id=str(data.get("request_id", "")),
            response_id=data.get("response_id"),
            latency_s=float(data.get("latency_s") or 0.0),
            cached=bool(data.get("cached", False)),
            warnings=[str(w) for w in data.get("warnings") or ()],
        )


@dataclass
class ProviderResult:
    """What one provider module returns for a finished (non-streamed) call."""

    text: str
    usage: Usage
    model: str
    finish_reason: str | None = None
    response_id: str | None = None
    http_status: int | None = None
    ttft_s: float | None = None


@dataclass
class Attempt:
    """One HTTP attempt (or one local generation): the ledger writes one row per attempt.

    ``status`` is one of ``ok``, ``error``, ``timeout`` (outcome unknown: may be billed),
    ``cancelled``. ``usage`` is set when the provider reported it (also on some errors).
    """

    number: int
    status: str
    latency_s: float
    http_status: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    response_id: str | None = None
    usage: Usage | None = None
    ttft_s: float | None = None
    will_retry: bool = False
    #: when the attempt began (``time.time()``): each attempt's row has its own times
    started_at: float | None = None
