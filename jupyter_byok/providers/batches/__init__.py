"""Provider batch APIs: one wire module per format (:mod:`.openai`, :mod:`.anthropic`,
:mod:`.gemini`) and :mod:`.dispatch`, the only place batch HTTP calls are made.

Each wire module turns request bodies (built by the chat wire modules, so a batch item is
exactly the synchronous request) into the provider's batch payload, reads the provider's
batch object into a :class:`BatchStatus` with one shared set of states, and reads the
result lines into one :class:`ItemOutcome` per ``custom_id``.

Invariants: no key is held here (only :mod:`.dispatch` adds auth headers, through the chat
dispatch's ``_auth``); an item the provider did not answer (failed, expired, cancelled) is
an outcome with no result, never dropped.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ...types import ProviderResult

__all__ = [
    "STATES",
    "TERMINAL",
    "WIRES",
    "BatchStatus",
    "ItemOutcome",
    "SizeLimits",
    "batch_wire",
    "split",
]

#: the shared states, whatever each provider calls them
STATES = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
    "failed",
)
TERMINAL = frozenset({"completed", "expired", "cancelled", "failed"})
WIRES = ("openai", "anthropic", "gemini")


@dataclass(frozen=True)
class SizeLimits:
    """What one batch may hold: requests, and bytes of the upload (or inline body)."""

    max_requests: int
    max_bytes: int


@dataclass
class BatchStatus:
    """A provider batch as last seen."""

    batch_id: str
    state: str
    total: int = 0
    done: int = 0
    failed: int = 0
    #: where the results are: file ids (OpenAI), a results URL (Anthropic), inline (Gemini)
    outputs: list[str] = field(default_factory=list)
    message: str = ""
    raw_state: str = ""
    #: Gemini answers inline: the results themselves
    inline: list[Any] | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass
class ItemOutcome:
    """One item's end: ``ok`` with a result, or ``error`` / ``expired`` / ``cancelled``."""

    custom_id: str
    status: str
    result: ProviderResult | None = None
    error_type: str | None = None
    error_message: str | None = None
    http_status: int | None = None


def batch_wire(wire: str) -> Any:
    """The batch wire module for a chat wire name, or a one-line error."""
    from ...errors import ConfigError

    if wire not in WIRES:
        raise ConfigError(
            f"{wire} endpoints have no batch API: use openai, anthropic or gemini models, "
            'or mode="sync"'
        )
    import importlib

    return importlib.import_module(f"{__name__}.{wire}")


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def json_lines(data: bytes) -> Iterator[Any]:
    """The objects of a JSONL body, one line at a time (no copy of the whole body)."""
    loads = json.loads
    for line in io.BytesIO(data):
        if line.strip():
            yield loads(line.decode())  # str: json skips guessing each line's encoding


def split(lines: list[bytes], limits: SizeLimits, overhead: int = 0) -> list[tuple[int, int]]:
    """``(start, stop)`` slices of ``lines`` that each fit ``limits`` (a line plus its
    separator, and ``overhead`` bytes per request, count against ``max_bytes``)."""
    parts: list[tuple[int, int]] = []
    start = 0
    size = 0
    for i, line in enumerate(lines):
        need = len(line) + 1 + overhead
        if need > limits.max_bytes:
            from ...errors import BadRequestError

            raise BadRequestError(
                f"row {i}: one batch request is {need} bytes, over the provider's "
                f"{limits.max_bytes}-byte batch limit; shorten the prompt or use mode='sync'"
            )
        if i > start and (i - start >= limits.max_requests or size + need > limits.max_bytes):
            parts.append((start, i))
            start, size = i, 0
        size += need
    if start < len(lines):
        parts.append((start, len(lines)))
    return parts
