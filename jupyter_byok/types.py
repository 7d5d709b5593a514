"""Value objects passed between the engine, providers, ledger and front ends.

These are pure values: identity and storage live in the ledger. Token counts follow one
convention for every provider: ``input_tokens`` counts *all* prompt tokens including the
cached ones, ``cached_input_tokens`` is the part read from the provider's prompt cache,
and ``output_tokens`` includes ``reasoning_tokens``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "Attempt",
    "Completion",
    "Message",
    "ProviderResult",
    "Request",
    "SearchResult",
    "StreamEvent",
    "Usage",
]

Role = Literal["system", "user", "assistant"]

#: the output-token limit of a cloud call that sets no ``max_tokens``: what Anthropic's
#: API requires us to send, and the upper bound estimates and budgets assume for every
#: provider (local models have their own smaller default, see providers/local/_params.py)
DEFAULT_MAX_TOKENS = 1024


@dataclass(frozen=True)
class Message:
    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


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

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.provider_cost_usd is not None:
            data["provider_cost_usd"] = str(self.provider_cost_usd)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        """The inverse of :meth:`to_dict` (unknown fields are ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        cost = known.pop("provider_cost_usd", None)
        return cls(**known, provider_cost_usd=None if cost is None else Decimal(str(cost)))


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "model": self.model,
            "provider": self.provider,
            "usage": self.usage.to_dict(),
            "cost_usd": None if self.cost_usd is None else str(self.cost_usd),
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
    def from_dict(cls, data: dict[str, Any]) -> Completion:
        """The inverse of :meth:`to_dict`: a completion from the server's JSON or the cache."""
        cost = data.get("cost_usd")
        return cls(
            text=str(data.get("text", "")),
            model=str(data.get("model", "")),
            provider=str(data.get("provider", "")),
            usage=Usage.from_dict(dict(data.get("usage") or {})),
            cost_usd=None if cost is None else Decimal(str(cost)),
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
