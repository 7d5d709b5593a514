"""The fake providers' batch endpoints: OpenAI Batch, Anthropic Message Batches, Gemini
Batch Mode, with the states, timings and per-item failures a test asks for.

A batch moves through its states by the clock (``FakeBatches.timing``: seconds spent
validating, in progress and finalizing; all 0 by default, so a batch is done at its first
poll), or stays in progress while ``hold`` is set. Items answer exactly what the
synchronous endpoint would (:class:`.wire.Answer`), so a batch item's usage equals the
synchronous call's. ``fail_items`` makes chosen items fail or expire; ``fail_batch``
makes the next batch fail validation.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .wire import Answer

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["FakeBatch", "FakeBatches", "handle_batch"]


@dataclass
class FakeBatch:
    provider: str
    id: str
    model: str
    items: list[tuple[str, dict[str, Any]]]
    created: float
    name: str = ""
    input_file_id: str = ""
    fail: str = ""  # a validation failure's message
    expire: bool = False  # ends expired: the items not answered by then expire
    cancelled_at: float | None = None
    outcomes: dict[str, str] = field(default_factory=dict)  # custom_id -> error | expired
    results: list[dict[str, Any]] | None = None
    output_file_id: str = ""
    error_file_id: str = ""
    #: Gemini: the requests came as a file, so the results go to one
    as_file: bool = False


class FakeBatches:
    """Batches, files and the knobs tests turn (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: dict[str, FakeBatch] = {}
        self.files: dict[str, bytes] = {}
        #: Gemini resumable uploads started and not finished
        self.uploads: set[str] = set()
        self.timing = (0.0, 0.0, 0.0)
        self.hold = False
        #: seconds a batch stays ``cancelling`` after a cancel
        self.cancel_s = 0.05
        self._fail_items: dict[str, list[tuple[str, set[str] | None, int]]] = {}
        self._fail_batch: dict[str, str] = {}
        self._expire: set[str] = set()

    def set_timing(
        self, validating: float = 0.0, in_progress: float = 0.0, finalizing: float = 0.0
    ) -> None:
        self.timing = (validating, in_progress, finalizing)

    def fail_items(
        self,
        provider: str,
        kind: str = "error",
        custom_ids: list[str] | None = None,
        every: int = 0,
    ) -> None:
        """Make items of later batches fail (``error``) or ``expire``: those named, or every
        ``every``-th item."""
        if kind not in ("error", "expired"):
            raise ValueError("kind must be 'error' or 'expired'")
        with self.lock:
            ids = set(custom_ids) if custom_ids is not None else None
            self._fail_items.setdefault(provider, []).append((kind, ids, every))

    def clear_failures(self) -> None:
        with self.lock:
            self._fail_items.clear()
            self._fail_batch.clear()

    def expire_batch(self, provider: str) -> None:
        """The next batch of ``provider`` ends ``expired`` (its completion window passed):
        every item the test did not make fail expires."""
        with self.lock:
            self._expire.add(provider)

    def fail_batch(self, provider: str, message: str = "invalid input file") -> None:
        """The next batch of ``provider`` fails validation (state ``failed``)."""
        with self.lock:
            self._fail_batch[provider] = message

    def add(self, batch: FakeBatch) -> FakeBatch:
        with self.lock:
            for kind, ids, every in self._fail_items.get(batch.provider, []):
                for i, (cid, _) in enumerate(batch.items):
                    if (ids is not None and cid in ids) or (every and i % every == every - 1):
                        batch.outcomes[cid] = kind
            batch.fail = self._fail_batch.pop(batch.provider, "")
            batch.expire = batch.provider in self._expire
            self._expire.discard(batch.provider)
            self.batches[batch.id] = batch
        return batch

    def get(self, batch_id: str) -> FakeBatch | None:
        with self.lock:
            return self.batches.get(batch_id)

    def state(self, batch: FakeBatch) -> str:
        """validating, in_progress, finalizing, completed, failed, cancelling, cancelled."""
        now = time.time()
        v, p, f = self.timing
        if batch.cancelled_at is not None:
            return "cancelled" if now - batch.cancelled_at >= self.cancel_s else "cancelling"
        age = now - batch.created
        if age < v:
            return "validating"
        if batch.fail:
            return "failed"
        if self.hold or age < v + p:
            return "in_progress"
        if batch.expire:
            return "expired"
        if age < v + p + f:
            return "finalizing"
        return "completed"


# ------------------------------------------------------------------- answering items
def _answer(provider: str, body: dict[str, Any]) -> Answer:
    from .exchange import _content_text, _gemini_text
    from .wire import UsagePlan

    if provider == "gemini":
        system = body.get("systemInstruction") or {}
        pairs = [("system", _gemini_text(system))] if system else []
        for c in body.get("contents") or []:
            pairs.append(("assistant" if c.get("role") == "model" else "user", _gemini_text(c)))
        limit = (body.get("generationConfig") or {}).get("maxOutputTokens")
    else:
        pairs = [(str(m.get("role")), _content_text(m.get("content"))) for m in body["messages"]]
        if provider == "anthropic" and body.get("system"):
            pairs.insert(0, ("system", str(body["system"])))
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
    texts = [t for _, t in pairs]
    users = [t for r, t in pairs if r == "user"]
    return Answer.for_prompt(texts, users[-1] if users else "", limit, UsagePlan())


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def _results(fake: FakeBatches, batch: FakeBatch, state: str, next_id: Any) -> list[dict[str, Any]]:
    """One neutral result per item: ``{"cid", "kind": ok|error|expired|cancelled, ...}``."""
    if batch.results is not None:
        return batch.results
    out: list[dict[str, Any]] = []
    for cid, body in batch.items:
        kind = batch.outcomes.get(cid, "ok")
        if state in ("cancelled", "expired"):
            kind = state if kind == "ok" else kind
        if kind == "ok":
            out.append(
                {
                    "cid": cid,
                    "kind": "ok",
                    "answer": _answer(batch.provider, body),
                    "model": batch.model,
                    "id": next_id("resp_"),
                }
            )
        else:
            out.append({"cid": cid, "kind": kind})
    batch.results = out
    return out


# ------------------------------------------------------------------- OpenAI
def _openai_batch(fake: FakeBatches, b: FakeBatch, exchange: Exchange) -> dict[str, Any]:
    state = fake.state(b)
    total = len(b.items)
    completed = failed = 0
    if state in ("completed", "cancelled", "expired"):
        results = _results(fake, b, state, exchange.fake._next_id)
        completed = sum(1 for r in results if r["kind"] == "ok")
        failed = total - completed
        if not b.output_file_id:
            ok = [r for r in results if r["kind"] == "ok"]
            bad = [r for r in results if r["kind"] != "ok"]
            if ok:
                b.output_file_id = exchange.fake._next_id("file-")
                fake.files[b.output_file_id] = _openai_lines(ok, exchange)
            if bad:
                b.error_file_id = exchange.fake._next_id("file-")
                fake.files[b.error_file_id] = _openai_lines(bad, exchange)
    if state == "failed":
        total = 0
    created = int(b.created)
    return {
        "id": b.id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": {
            "object": "list",
            "data": [{"code": "invalid_request", "message": b.fail, "line": 1, "param": None}],
        }
        if state == "failed"
        else None,
        "input_file_id": b.input_file_id,
        "completion_window": "24h",
        "status": state,
        "output_file_id": b.output_file_id or None,
        "error_file_id": b.error_file_id or None,
        "created_at": created,
        "in_progress_at": created if state != "validating" else None,
        "expires_at": created + 86400,
        "finalizing_at": None,
        "completed_at": int(time.time()) if state == "completed" else None,
        "failed_at": int(time.time()) if state == "failed" else None,
        "expired_at": int(time.time()) if state == "expired" else None,
        "cancelling_at": int(b.cancelled_at) if b.cancelled_at else None,
        "cancelled_at": int(time.time()) if state == "cancelled" else None,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "metadata": {"name": b.name} if b.name else {},
    }


def _openai_lines(results: list[dict[str, Any]], exchange: Exchange) -> bytes:
    lines = []
    for r in results:
        rid = exchange.fake._next_id("batch_req_")
        if r["kind"] == "ok":
            ans: Answer = r["answer"]
            body = {
                "id": r["id"],
                "object": "chat.completion",
                "created": 1727346142,
                "model": r["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": ans.text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": ans.finish,
                    }
                ],
                "usage": ans.openai_usage("openai"),
                "service_tier": "default",
            }
            line: dict[str, Any] = {
                "id": rid,
                "custom_id": r["cid"],
                "error": None,
                "response": {"status_code": 200, "request_id": rid, "body": body},
            }
        elif r["kind"] == "error":
            err = {
                "message": "Invalid request: the fake was told to fail this item",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_request",
            }
            line = {
                "id": rid,
                "custom_id": r["cid"],
                "error": None,
                "response": {"status_code": 400, "request_id": rid, "body": {"error": err}},
            }
        else:
            code = "batch_expired" if r["kind"] == "expired" else "batch_cancelled"
            line = {
                "id": rid,
                "custom_id": r["cid"],
                "response": None,
                "error": {"code": code, "message": f"This request was not run ({code})."},
            }
        lines.append(json.dumps(line, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def _multipart(exchange: Exchange) -> dict[str, bytes]:
    raw = exchange.record.body
    data = raw.encode() if isinstance(raw, str) else json.dumps(raw).encode()
    ctype = exchange.record.headers.get("content-type", "")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"content-type: " + ctype.encode() + b"\r\n\r\n" + data
    )
    parts: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            parts[name] = payload
    return parts


def _on_openai(fake: FakeBatches, exchange: Exchange, p: str) -> bool:
    cmd = exchange.h.command
    if cmd == "POST" and p == "/files":
        parts = _multipart(exchange)
        if parts.get("purpose") != b"batch" or "file" not in parts:
            exchange.bad_request("a batch upload needs purpose=batch and a file")
            return True
        fid = exchange.fake._next_id("file-")
        with fake.lock:
            fake.files[fid] = parts["file"]
        exchange.send_json(
            200,
            {
                "id": fid,
                "object": "file",
                "bytes": len(parts["file"]),
                "created_at": int(time.time()),
                "filename": "input.jsonl",
                "purpose": "batch",
                "status": "processed",
                "expires_at": None,
                "status_details": None,
            },
        )
        return True
    if cmd == "POST" and p == "/batches":
        body = exchange.body
        content = fake.files.get(str(body.get("input_file_id")))
        if content is None or body.get("endpoint") != "/v1/chat/completions":
            exchange.bad_request("input_file_id must name an uploaded batch file")
            return True
        items = []
        for line in content.decode().splitlines():
            if line.strip():
                data = json.loads(line)
                items.append((str(data["custom_id"]), data["body"]))
        model = str(items[0][1].get("model", "")) if items else ""
        b = fake.add(
            FakeBatch(
                "openai",
                exchange.fake._next_id("batch_"),
                model,
                items,
                time.time(),
                str((body.get("metadata") or {}).get("name", "")),
                input_file_id=str(body["input_file_id"]),
            )
        )
        exchange.send_json(200, _openai_batch(fake, b, exchange))
        return True
    if p.startswith("/batches/"):
        bid, _, action = p[len("/batches/") :].partition("/")
        found = fake.get(bid)
        if found is None or found.provider != "openai":
            exchange.error("not_found", message=f"No batch found with id '{bid}'.")
            return True
        b = found
        if cmd == "POST" and action == "cancel":
            if b.cancelled_at is None and fake.state(b) not in ("completed", "failed"):
                b.cancelled_at = time.time()
            exchange.send_json(200, _openai_batch(fake, b, exchange))
            return True
        exchange.send_json(200, _openai_batch(fake, b, exchange))
        return True
    if cmd == "GET" and p.startswith("/files/") and p.endswith("/content"):
        fid = p[len("/files/") : -len("/content")]
        content = fake.files.get(fid)
        if content is None:
            exchange.error("not_found", message=f"No such File object: {fid}")
            return True
        h = exchange.h
        h.send_response(200)
        h.send_header("content-type", "application/octet-stream")
        h.send_header("content-length", str(len(content)))
        for k, v in exchange.id_headers().items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(content)
        return True
    return False


# ------------------------------------------------------------------- Anthropic
def _anthropic_batch(fake: FakeBatches, b: FakeBatch, exchange: Exchange) -> dict[str, Any]:
    state = fake.state(b)
    counts = {"processing": len(b.items), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    ended = state in ("completed", "cancelled", "failed", "expired")
    if ended:
        counts["processing"] = 0
        seen = state if state in ("cancelled", "expired") else "completed"
        for r in _results(fake, b, seen, exchange.fake._next_id):
            key = {"ok": "succeeded", "error": "errored", "cancelled": "canceled"}.get(
                r["kind"], r["kind"]
            )
            counts[key] += 1
    status = "ended" if ended else ("canceling" if state == "cancelling" else "in_progress")
    base = exchange.fake.base_url("anthropic")
    return {
        "id": b.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": counts,
        "ended_at": _iso(time.time()) if ended else None,
        "created_at": _iso(b.created),
        "expires_at": _iso(b.created + 86400),
        "archived_at": None,
        "cancel_initiated_at": _iso(b.cancelled_at),
        "results_url": f"{base}/v1/messages/batches/{b.id}/results" if ended else None,
    }


def _on_anthropic(fake: FakeBatches, exchange: Exchange, p: str) -> bool:
    cmd = exchange.h.command
    if not p.startswith("/v1/messages/batches"):
        return False
    rest = p[len("/v1/messages/batches") :].strip("/")
    if cmd == "POST" and not rest:
        requests = exchange.body.get("requests")
        if not isinstance(requests, list) or not requests:
            exchange.bad_request("requests: a non-empty list is required")
            return True
        items = [(str(r["custom_id"]), r["params"]) for r in requests]
        model = str(items[0][1].get("model", ""))
        b = fake.add(
            FakeBatch("anthropic", exchange.fake._next_id("msgbatch_"), model, items, time.time())
        )
        exchange.send_json(200, _anthropic_batch(fake, b, exchange))
        return True
    bid, _, action = rest.partition("/")
    found = fake.get(bid)
    if found is None or found.provider != "anthropic":
        exchange.error("not_found", message=f"batch {bid} not found")
        return True
    b = found
    if cmd == "POST" and action == "cancel":
        if b.cancelled_at is None and fake.state(b) != "completed":
            b.cancelled_at = time.time()
        exchange.send_json(200, _anthropic_batch(fake, b, exchange))
        return True
    if cmd == "GET" and action == "results":
        state = fake.state(b)
        if state not in ("completed", "cancelled", "expired"):
            exchange.error("not_found", message="results are not available yet")
            return True
        lines = []
        for r in _results(fake, b, state, exchange.fake._next_id):
            if r["kind"] == "ok":
                ans: Answer = r["answer"]
                msg = {
                    "id": r["id"].replace("resp_", "msg_"),
                    "type": "message",
                    "role": "assistant",
                    "model": r["model"],
                    "content": ans.anthropic_content(),
                    "stop_reason": "max_tokens" if ans.finish == "length" else "end_turn",
                    "stop_sequence": None,
                    "usage": {**ans.anthropic_usage(), "service_tier": "batch"},
                }
                result: dict[str, Any] = {"type": "succeeded", "message": msg}
            elif r["kind"] == "error":
                result = {
                    "type": "errored",
                    "error": {
                        "type": "error",
                        "error": {
                            "type": "invalid_request_error",
                            "message": "the fake was told to fail this item",
                        },
                    },
                }
            elif r["kind"] == "expired":
                result = {"type": "expired"}
            else:
                result = {"type": "canceled"}
            lines.append(
                json.dumps({"custom_id": r["cid"], "result": result}, separators=(",", ":"))
            )
        data = ("\n".join(lines) + "\n").encode()
        h = exchange.h
        h.send_response(200)
        h.send_header("content-type", "application/binary")
        h.send_header("content-length", str(len(data)))
        for k, v in exchange.id_headers().items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)
        return True
    exchange.send_json(200, _anthropic_batch(fake, b, exchange))
    return True


# ------------------------------------------------------------------- Gemini
_GEMINI_STATES = {
    "validating": "BATCH_STATE_PENDING",
    "in_progress": "BATCH_STATE_RUNNING",
    "finalizing": "BATCH_STATE_RUNNING",
    "completed": "BATCH_STATE_SUCCEEDED",
    "failed": "BATCH_STATE_FAILED",
    "cancelling": "BATCH_STATE_RUNNING",
    "cancelled": "BATCH_STATE_CANCELLED",
    "expired": "BATCH_STATE_EXPIRED",
}


def _gemini_batch(fake: FakeBatches, b: FakeBatch, exchange: Exchange) -> dict[str, Any]:
    state = fake.state(b)
    meta: dict[str, Any] = {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
        "model": f"models/{b.model}",
        "displayName": b.name,
        "state": _GEMINI_STATES[state],
        "createTime": _iso(b.created),
        "updateTime": _iso(time.time()),
    }
    op: dict[str, Any] = {"name": b.id, "metadata": meta, "done": False}
    stats = {"requestCount": str(len(b.items)), "pendingRequestCount": str(len(b.items))}
    if state in ("completed", "cancelled"):
        out = []
        for r in _results(fake, b, state, exchange.fake._next_id):
            md = {"key": r["cid"]}
            if r["kind"] == "ok":
                ans: Answer = r["answer"]
                resp = {
                    "candidates": [
                        {
                            "content": {"parts": [{"text": ans.text}], "role": "model"},
                            "finishReason": "MAX_TOKENS" if ans.finish == "length" else "STOP",
                            "index": 0,
                        }
                    ],
                    "usageMetadata": ans.gemini_usage(),
                    "modelVersion": b.model,
                    "responseId": r["id"],
                }
                out.append({"response": resp, "metadata": md})
            else:
                status = {"expired": "DEADLINE_EXCEEDED", "cancelled": "CANCELLED"}.get(
                    r["kind"], "INVALID_ARGUMENT"
                )
                code = {"DEADLINE_EXCEEDED": 504, "CANCELLED": 499}.get(status, 400)
                out.append(
                    {
                        "error": {
                            "code": code,
                            "message": f"item {status.lower()}",
                            "status": status,
                        },
                        "metadata": md,
                    }
                )
        ok = sum(1 for r in out if "response" in r)
        stats = {
            "requestCount": str(len(out)),
            "successfulRequestCount": str(ok),
            "failedRequestCount": str(len(out) - ok),
        }
        if b.as_file:
            if not b.output_file_id:
                b.output_file_id = "files/" + exchange.fake._next_id("batch-out-")
                lines = [
                    json.dumps(
                        {
                            "key": r["metadata"]["key"],
                            **{k: v for k, v in r.items() if k != "metadata"},
                        },
                        separators=(",", ":"),
                    )
                    for r in out
                ]
                fake.files[b.output_file_id] = ("\n".join(lines) + "\n").encode()
            output: dict[str, Any] = {"responsesFile": b.output_file_id}
        else:
            output = {"inlinedResponses": {"inlinedResponses": out}}
        meta["output"] = output
        meta["endTime"] = _iso(time.time())
        op["done"] = True
        op["response"] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput",
            **output,
        }
    elif state == "failed":
        op["done"] = True
        op["error"] = {"code": 400, "message": b.fail, "status": "INVALID_ARGUMENT"}
    elif state == "expired":
        op["done"] = True
    meta["batchStats"] = stats
    return op


def _raw_body(exchange: Exchange) -> bytes:
    body = exchange.record.body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode() if body is not None else b""


def _on_gemini_files(fake: FakeBatches, exchange: Exchange, p: str) -> bool:
    """The Files API's resumable upload, and downloads of result files."""
    cmd = exchange.h.command
    headers = exchange.record.headers
    if cmd == "POST" and p.endswith("/files") and p.startswith("/upload/"):
        upload = (exchange.record.query.get("upload_id") or [""])[0]
        if not upload:
            if headers.get("x-goog-upload-command") != "start":
                exchange.bad_request("X-Goog-Upload-Command: start is required")
                return True
            upload = exchange.fake._next_id("up")
            with fake.lock:
                fake.uploads.add(upload)
            url = f"{exchange.fake.base_url('gemini')}{p}?upload_id={upload}"
            exchange.send_json(
                200, {}, {"x-goog-upload-url": url, "x-goog-upload-status": "active"}
            )
            return True
        with fake.lock:
            known = upload in fake.uploads
            fake.uploads.discard(upload)
        if not known:
            exchange.error("not_found", message="no such upload")
            return True
        if "finalize" not in headers.get("x-goog-upload-command", ""):
            exchange.bad_request("the fake takes a file in one 'upload, finalize' request")
            return True
        name = "files/" + exchange.fake._next_id("batch-in-")
        data = _raw_body(exchange)
        with fake.lock:
            fake.files[name] = data
        exchange.send_json(
            200,
            {
                "file": {
                    "name": name,
                    "mimeType": "application/jsonl",
                    "sizeBytes": str(len(data)),
                    "state": "ACTIVE",
                    "uri": f"{exchange.fake.base_url('gemini')}/v1beta/{name}",
                }
            },
            {"x-goog-upload-status": "final"},
        )
        return True
    if cmd == "GET" and p.endswith(":download") and "/files/" in p:
        name = "files/" + p.split("/files/", 1)[1][: -len(":download")]
        content = fake.files.get(name)
        if content is None:
            exchange.error("not_found", message=f"{name} not found")
            return True
        h = exchange.h
        h.send_response(200)
        h.send_header("content-type", "application/octet-stream")
        h.send_header("content-length", str(len(content)))
        h.end_headers()
        h.wfile.write(content)
        return True
    return False


def _on_gemini(fake: FakeBatches, exchange: Exchange, p: str) -> bool:
    cmd = exchange.h.command
    if _on_gemini_files(fake, exchange, p):
        return True
    if cmd == "POST" and p.endswith(":batchGenerateContent"):
        batch = exchange.body.get("batch") or {}
        config = batch.get("inputConfig") or {}
        reqs = (config.get("requests") or {}).get("requests")
        as_file = bool(config.get("fileName"))
        if as_file:
            content = fake.files.get(str(config["fileName"]))
            if content is None:
                exchange.bad_request(f"file {config['fileName']} not found")
                return True
            reqs = [json.loads(x) for x in content.decode().splitlines() if x.strip()]
        if not isinstance(reqs, list) or not reqs:
            exchange.bad_request("batch.inputConfig.requests.requests is required")
            return True
        items = [
            (str(r.get("key") or (r.get("metadata") or {}).get("key")), r["request"]) for r in reqs
        ]
        b = fake.add(
            FakeBatch(
                "gemini",
                "batches/" + exchange.fake._next_id("b"),
                exchange.path_model(),
                items,
                time.time(),
                str(batch.get("displayName", "")),
                as_file=as_file,
            )
        )
        exchange.send_json(200, _gemini_batch(fake, b, exchange))
        return True
    for version in ("/v1beta/", "/v1alpha/", "/v1/"):
        if p.startswith(version + "batches/"):
            name, _, action = p[len(version) :].partition(":")
            found = fake.get(name)
            if found is None or found.provider != "gemini":
                exchange.error("not_found", message=f"{name} not found")
                return True
            b = found
            if cmd == "POST" and action == "cancel":
                if b.cancelled_at is None and fake.state(b) not in ("completed", "failed"):
                    b.cancelled_at = time.time()
                exchange.send_json(200, {})
                return True
            exchange.send_json(200, _gemini_batch(fake, b, exchange))
            return True
    return False


def handle_batch(exchange: Exchange) -> bool:
    """Answer a batch request; ``False`` when the request is not one."""
    fake: FakeBatches = exchange.fake.batches
    p = exchange.path
    if exchange.provider == "openai":
        return _on_openai(fake, exchange, p[3:] if p.startswith("/v1/") else p)
    if exchange.provider == "anthropic":
        return _on_anthropic(fake, exchange, p)
    if exchange.provider == "gemini":
        return _on_gemini(fake, exchange, p)
    return False
