"""Anthropic Message Batches: ``POST /v1/messages/batches`` with ``{"requests": [{"custom_id",
"params": <the messages request>}]}``; ``GET /v1/messages/batches/{id}`` to poll
(``processing_status`` in_progress / canceling / ended, ``request_counts``); ``POST
.../cancel``; the results JSONL from the batch's ``results_url``, one line per request:
``{"custom_id", "result": {"type": "succeeded", "message"} | {"type": "errored", "error"} |
{"type": "expired"} | {"type": "canceled"}}``. Limits: 100,000 requests and 256 MB a batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import anthropic as chat
from . import BatchStatus, ItemOutcome, SizeLimits, dumps
from . import json_lines as _lines

__all__ = ["LIMITS", "item_line", "parse_batch", "parse_results"]

LIMITS = SizeLimits(max_requests=100_000, max_bytes=256 * 1000 * 1000)


def item_line(custom_id: str, body: dict[str, Any]) -> bytes:
    return dumps({"custom_id": custom_id, "params": body})


def create_content(lines: list[bytes]) -> bytes:
    """The create body from item lines, joined without parsing them again."""
    return b'{"requests":[' + b",".join(lines) + b"]}"


def batch_url(base_url: str, batch_id: str = "") -> str:
    return base_url + "/v1/messages/batches" + (f"/{batch_id}" if batch_id else "")


def parse_batch(data: Any) -> BatchStatus:
    if not isinstance(data, dict) or data.get("type") != "message_batch" or not data.get("id"):
        from ..base import wrong_shape

        raise wrong_shape("anthropic", "a message batch")
    counts = data.get("request_counts") or {}
    raw = str(data.get("processing_status", ""))
    total = sum(int(v or 0) for v in counts.values() if isinstance(v, int))
    failed = sum(int(counts.get(k) or 0) for k in ("errored", "expired", "canceled"))
    done = int(counts.get("succeeded") or 0)
    if raw == "ended":
        # ended: every request succeeded, errored, expired or was cancelled
        if data.get("cancel_initiated_at"):
            state = "cancelled"
        elif done == 0 and int(counts.get("expired") or 0) == total and total:
            state = "expired"
        else:
            state = "completed"
    elif raw == "canceling":
        state = "cancelling"
    else:
        state = "in_progress"
    url = data.get("results_url")
    return BatchStatus(
        batch_id=str(data["id"]),
        state=state,
        total=total,
        done=done,
        failed=failed,
        outputs=[str(url)] if url else [],
        raw_state=raw,
    )


def parse_results(provider: str, model: str, data: bytes) -> Iterator[ItemOutcome]:
    for line in _lines(data):
        cid = str(line.get("custom_id"))
        result = line.get("result") or {}
        kind = result.get("type")
        if kind == "succeeded":
            yield ItemOutcome(cid, "ok", chat.parse_chat(provider, model, result.get("message")))
        elif kind == "errored":
            err = (result.get("error") or {}).get("error") or {}
            yield ItemOutcome(
                cid,
                "error",
                error_type=str(err.get("type") or "errored"),
                error_message=str(err.get("message") or ""),
            )
        elif kind == "expired":
            yield ItemOutcome(cid, "expired", error_type="expired", error_message="expired")
        else:
            yield ItemOutcome(cid, "cancelled", error_type="canceled", error_message="cancelled")
