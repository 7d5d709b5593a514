"""Gemini Batch Mode (Developer API): ``POST /v1beta/models/{model}:batchGenerateContent``
with inline requests, ``{"batch": {"displayName", "inputConfig": {"requests": {"requests":
[{"request": <the generateContent body>, "metadata": {"key": custom_id}}]}}}}``; it answers
a long-running operation named ``batches/{id}``, polled with ``GET /v1beta/batches/{id}``
(``metadata.state`` BATCH_STATE_PENDING / RUNNING / SUCCEEDED / FAILED / CANCELLED /
EXPIRED) and cancelled with ``POST /v1beta/batches/{id}:cancel``. Results come inline, in
request order: ``metadata.output.inlinedResponses.inlinedResponses[]``, each ``{"response",
"metadata"}`` or ``{"error": {"code", "message", "status"}}``.

Inline requests are limited to 20 MB a batch: a node of more than :data:`INLINE_MAX`
requests goes as a JSONL file instead (lines ``{"key", "request"}``), uploaded with the
Files API's resumable protocol (``POST /upload/v1beta/files``, ``X-Goog-Upload-Command:
start``, then ``upload, finalize`` to the URL it answers) and named in
``inputConfig.fileName``; its results are a JSONL file too (``output.responsesFile``, lines
``{"key", "response"}`` or ``{"key", "error"}``), read from
``GET /download/v1beta/{file}:download?alt=media``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .. import gemini as chat
from . import BatchStatus, ItemOutcome, SizeLimits, dumps, json_lines

__all__ = ["LIMITS", "item_line", "parse_batch", "parse_results"]

LIMITS = SizeLimits(max_requests=100_000, max_bytes=20 * 1000 * 1000)
#: a file of requests: up to 2 GB
FILE_LIMITS = SizeLimits(max_requests=10_000_000, max_bytes=2 * 1000 * 1000 * 1000)
#: nodes with more requests than this go as a file
INLINE_MAX = 1000
_STATES = {
    "BATCH_STATE_PENDING": "validating",
    "BATCH_STATE_RUNNING": "in_progress",
    "BATCH_STATE_SUCCEEDED": "completed",
    "BATCH_STATE_FAILED": "failed",
    "BATCH_STATE_CANCELLED": "cancelled",
    "BATCH_STATE_EXPIRED": "expired",
}


def item_line(custom_id: str, body: dict[str, Any]) -> bytes:
    return dumps({"request": body, "metadata": {"key": custom_id}})


def file_line(custom_id: str, body: dict[str, Any]) -> bytes:
    return dumps({"key": custom_id, "request": body})


def upload_url(base_url: str) -> str:
    return f"{base_url}/upload/{chat.API_VERSION}/files"


def file_create_content(file_name: str, display_name: str) -> bytes:
    return dumps({"displayName": display_name, "inputConfig": {"fileName": file_name}})


def download_url(base_url: str, file_name: str) -> str:
    """The URL of a result file (sent with the query ``alt=media``)."""
    return f"{base_url}/download/{chat.API_VERSION}/{file_name}:download"


def create_url(base_url: str, model: str) -> str:
    return f"{base_url}/{chat.API_VERSION}/{chat.model_path('gemini', model)}:batchGenerateContent"


def create_content(lines: list[bytes], display_name: str) -> bytes:
    head = dumps({"displayName": display_name})[:-1]
    return head + b',"inputConfig":{"requests":{"requests":[' + b",".join(lines) + b"]}}}"


def wrap(content: bytes) -> bytes:
    return b'{"batch":' + content + b"}"


def batch_url(base_url: str, batch_id: str) -> str:
    return f"{base_url}/{chat.API_VERSION}/{batch_id}"


def parse_batch(data: Any) -> BatchStatus:
    if not isinstance(data, dict) or not str(data.get("name", "")).startswith("batches/"):
        from ..base import wrong_shape

        raise wrong_shape("gemini", "a batch operation")
    meta = data.get("metadata") or {}
    raw = str(meta.get("state", ""))
    stats = meta.get("batchStats") or {}
    output = meta.get("output") or (data.get("response") or {})
    inline = (output.get("inlinedResponses") or {}).get("inlinedResponses")
    error = data.get("error") or {}
    outputs = ["inline"] if inline is not None else []
    if output.get("responsesFile"):
        outputs = [str(output["responsesFile"])]
    return BatchStatus(
        batch_id=str(data["name"]),
        state=_STATES.get(raw, "in_progress"),
        total=int(stats.get("requestCount") or 0),
        done=int(stats.get("successfulRequestCount") or 0),
        failed=int(stats.get("failedRequestCount") or 0),
        outputs=outputs,
        message=str(error.get("message") or ""),
        raw_state=raw,
        inline=inline,
    )


def parse_file_results(provider: str, model: str, data: bytes) -> Iterator[ItemOutcome]:
    """Outcomes from a responses file (lines ``{"key", "response" | "error"}``)."""
    return parse_results(provider, model, json_lines(data))


def parse_results(provider: str, model: str, items: Iterable[Any]) -> Iterator[ItemOutcome]:
    for item in items:
        cid = str(item.get("key") or (item.get("metadata") or {}).get("key"))
        if item.get("error"):
            err = item["error"]
            status = {"DEADLINE_EXCEEDED": "expired", "CANCELLED": "cancelled"}.get(
                str(err.get("status")), "error"
            )
            yield ItemOutcome(
                cid,
                status,
                error_type=str(err.get("status") or "error"),
                error_message=str(err.get("message") or ""),
                http_status=err.get("code") if isinstance(err.get("code"), int) else None,
            )
        else:
            yield ItemOutcome(cid, "ok", chat.parse_chat(provider, model, item.get("response")))
