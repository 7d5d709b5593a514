"""OpenAI Batch API: a JSONL file uploaded to ``/v1/files`` (purpose ``batch``), then
``POST /v1/batches``; ``GET /v1/batches/{id}`` to poll, ``POST .../cancel``, and the
output and error files from ``GET /v1/files/{id}/content``.

A line of the input file: ``{"custom_id", "method": "POST", "url": "/v1/chat/completions",
"body": <the chat request>}``; of the output file: ``{"id", "custom_id", "response":
{"status_code", "request_id", "body"}, "error"}``. Items that failed go to the error
file, in the same shape (a non-200 ``status_code``, or ``error`` with ``batch_expired`` /
``batch_cancelled`` when the batch ended first). Limits: 50,000 requests and 200 MB a file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import openai as chat
from . import BatchStatus, ItemOutcome, SizeLimits, dumps
from . import json_lines as _lines

__all__ = ["LIMITS", "item_line", "parse_batch", "parse_results"]

LIMITS = SizeLimits(max_requests=50_000, max_bytes=200 * 1024 * 1024)
ENDPOINT = "/v1/chat/completions"
_STATES = {
    "validating": "validating",
    "in_progress": "in_progress",
    "finalizing": "finalizing",
    "completed": "completed",
    "expired": "expired",
    "cancelling": "cancelling",
    "cancelled": "cancelled",
    "failed": "failed",
}


def item_line(custom_id: str, body: dict[str, Any]) -> bytes:
    return dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body})


def upload_url(base_url: str) -> str:
    return base_url + "/files"


def create_body(file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
    return {
        "input_file_id": file_id,
        "endpoint": ENDPOINT,
        "completion_window": "24h",
        "metadata": metadata,
    }


def batch_url(base_url: str, batch_id: str = "") -> str:
    return base_url + "/batches" + (f"/{batch_id}" if batch_id else "")


def content_url(base_url: str, file_id: str) -> str:
    return f"{base_url}/files/{file_id}/content"


def parse_batch(data: Any) -> BatchStatus:
    if not isinstance(data, dict) or data.get("object") != "batch" or not data.get("id"):
        from ..base import wrong_shape

        raise wrong_shape("openai", "a batch object")
    counts = data.get("request_counts") or {}
    raw = str(data.get("status", ""))
    errors = (data.get("errors") or {}).get("data") or []
    message = "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict))
    outputs = [f for f in (data.get("output_file_id"), data.get("error_file_id")) if f]
    return BatchStatus(
        batch_id=str(data["id"]),
        state=_STATES.get(raw, "in_progress"),
        total=int(counts.get("total") or 0),
        done=int(counts.get("completed") or 0),
        failed=int(counts.get("failed") or 0),
        outputs=outputs,
        message=message,
        raw_state=raw,
    )


def parse_results(provider: str, model: str, data: bytes) -> Iterator[ItemOutcome]:
    """Outcomes from an output or error file (both have the same line shape)."""
    for line in _lines(data):
        cid = str(line.get("custom_id"))
        error = line.get("error")
        response = line.get("response")
        if error:
            code = str(error.get("code") or "batch_error")
            status = {"batch_expired": "expired", "batch_cancelled": "cancelled"}.get(code, "error")
            yield ItemOutcome(cid, status, error_type=code, error_message=error.get("message"))
            continue
        status_code = int((response or {}).get("status_code") or 0)
        body = (response or {}).get("body")
        if status_code != 200:
            err = (body or {}).get("error") if isinstance(body, dict) else None
            err = err if isinstance(err, dict) else {}
            yield ItemOutcome(
                cid,
                "error",
                error_type=str(err.get("code") or err.get("type") or f"http_{status_code}"),
                error_message=str(err.get("message") or ""),
                http_status=status_code,
            )
            continue
        yield ItemOutcome(cid, "ok", chat.parse_chat(provider, model, body), http_status=200)
