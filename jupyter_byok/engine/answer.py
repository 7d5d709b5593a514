"""The provider's answer as a :class:`Completion`: gathered as it arrives
(:class:`Answer`), or read back from the response cache (:func:`from_cache`)."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from ..types import Completion, ProviderResult, StreamEvent, Usage

if TYPE_CHECKING:
    from ..models import ModelRef

__all__ = ["Answer", "from_cache"]


class Answer:
    """What the provider said so far: text, usage, finish reason, ids, time to first token."""

    __slots__ = ("finish_reason", "parts", "response_id", "ttft", "usage")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.response_id: str | None = None
        self.ttft: float | None = None

    def add(self, event: StreamEvent, started: float) -> None:
        """One event of a stream (a text delta, or the last one with the usage)."""
        if event.delta:
            if self.ttft is None:
                self.ttft = time.monotonic() - started
            self.parts.append(event.delta)
        if event.done:
            self.usage, self.finish_reason = event.usage, event.finish_reason
            self.response_id = event.response_id

    def take(self, result: ProviderResult) -> None:
        """A finished (non-streamed) answer."""
        self.parts.append(result.text)
        self.usage, self.finish_reason = result.usage, result.finish_reason
        self.response_id, self.ttft = result.response_id, result.ttft_s

    def completion(self, ref: ModelRef, request_id: str, started: float) -> Completion:
        """The completion, not yet priced nor recorded."""
        return Completion(
            text="".join(self.parts),
            model=ref.id,
            provider=ref.provider,
            usage=self.usage or Usage(),
            finish_reason=self.finish_reason,
            request_id=request_id,
            response_id=self.response_id,
            latency_s=time.monotonic() - started,
            ttft_s=self.ttft,
        )


def from_cache(payload: dict[str, Any], ref: ModelRef, request_id: str) -> Completion:
    """The cached answer as this call's completion (its own id, no latency yet)."""
    stored = Completion.from_dict(payload)
    return dataclasses.replace(
        stored,
        model=ref.id,
        provider=ref.provider,
        request_id=request_id,
        latency_s=0.0,
        ttft_s=None,
        cached=True,
        ledger_id=None,
        warnings=[],
    )
