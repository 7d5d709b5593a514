"""The one place batch HTTP calls are made (the chat calls' is :mod:`..dispatch`).

Invariants, as for chat calls: the key is revealed only inside the chat wire module's
``auth_headers``, a bound key goes to its own origin only (``dispatch._auth``), errors are
mapped once (:func:`..base.error_from_response`) and never carry the key or a body we sent.
A request that creates something (an upload, a batch) is not retried after a transport
error or a timeout, where the provider may already have made it; polls and downloads are.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from ...errors import ProviderError
from .. import ProviderSpec
from ..base import (
    RetryPolicy,
    error_from_exception,
    error_from_response,
    send_request,
    transport_errors,
)
from ..dispatch import _auth, _base_url, _wire
from . import BatchStatus, ItemOutcome, batch_wire

if TYPE_CHECKING:
    from ...redact import Secret
    from ..base import AsyncHTTPClient

__all__ = ["cancel", "create", "results", "retrieve"]

POLL = RetryPolicy(max_retries=4, initial_delay=0.5, max_delay=8.0)
CREATE = RetryPolicy(max_retries=2, initial_delay=0.5, retry_timeouts=False)
TIMEOUT = 600.0


async def _send(
    spec: ProviderSpec,
    key: Secret | None,
    client: AsyncHTTPClient,
    method: str,
    url: str,
    *,
    content: bytes | None = None,
    content_type: str = "application/json",
    policy: RetryPolicy = POLL,
    creates: bool = False,
) -> bytes:
    """The body of a 2xx answer; retries what ``policy`` allows."""
    headers = dict(_auth(_wire(spec), spec, key, url))
    if content is not None:
        headers["content-type"] = content_type
    number = 0
    while True:
        try:
            response = await send_request(
                client, method, url, content=content, headers=headers, timeout=TIMEOUT
            )
        except transport_errors() as exc:
            error = error_from_exception(spec.name, exc, url.split("?")[0])
            if creates:
                raise error from None  # it may have been made: never sent twice
            response = None
        if response is not None:
            if 200 <= response.status_code < 300:
                return bytes(response.content)
            error = error_from_response(
                spec.name, response.status_code, response.headers, response.content
            )
            headers_seen = response.headers
        else:
            headers_seen = None
        delay = policy.delay(number, error, headers_seen)
        if delay is None:
            raise error
        number += 1
        await asyncio.sleep(delay)


def _json(body: bytes, spec: ProviderSpec) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise ProviderError(
            f"{spec.name} answered a batch request with a body that is not JSON; try again",
            provider=spec.name,
            error_type="malformed_answer",
        ) from None


async def create(
    spec: ProviderSpec,
    model: str,
    lines: list[bytes],
    key: Secret | None,
    *,
    client: AsyncHTTPClient,
    name: str,
) -> BatchStatus:
    """Upload and create one batch of item lines (built by the wire module's ``item_line``)."""
    module = batch_wire(spec.wire)
    base = _base_url(spec, key)
    if spec.wire == "openai":
        import httpx

        upload = httpx.Request(
            "POST",
            module.upload_url(base),
            data={"purpose": "batch"},
            files={"file": (f"{name}.jsonl", b"\n".join(lines) + b"\n", "application/jsonl")},
        )
        raw = await _send(
            spec,
            key,
            client,
            "POST",
            module.upload_url(base),
            content=upload.read(),
            content_type=upload.headers["content-type"],
            policy=CREATE,
            creates=True,
        )
        file_id = str(_json(raw, spec).get("id"))
        body = json.dumps(module.create_body(file_id, {"name": name[:512]})).encode()
        raw = await _send(
            spec,
            key,
            client,
            "POST",
            module.batch_url(base),
            content=body,
            policy=CREATE,
            creates=True,
        )
    elif spec.wire == "anthropic":
        raw = await _send(
            spec,
            key,
            client,
            "POST",
            module.batch_url(base),
            content=module.create_content(lines),
            policy=CREATE,
            creates=True,
        )
    else:
        raw = await _send(
            spec,
            key,
            client,
            "POST",
            module.create_url(base, model),
            content=module.wrap(module.create_content(lines, name)),
            policy=CREATE,
            creates=True,
        )
    status: BatchStatus = module.parse_batch(_json(raw, spec))
    return status


async def retrieve(
    spec: ProviderSpec, batch_id: str, key: Secret | None, *, client: AsyncHTTPClient
) -> BatchStatus:
    module = batch_wire(spec.wire)
    raw = await _send(spec, key, client, "GET", module.batch_url(_base_url(spec, key), batch_id))
    status: BatchStatus = module.parse_batch(_json(raw, spec))
    return status


async def cancel(
    spec: ProviderSpec, batch_id: str, key: Secret | None, *, client: AsyncHTTPClient
) -> BatchStatus:
    module = batch_wire(spec.wire)
    url = module.batch_url(_base_url(spec, key), batch_id)
    url += ":cancel" if spec.wire == "gemini" else "/cancel"
    raw = await _send(spec, key, client, "POST", url, content=b"{}")
    if spec.wire == "gemini":  # answers an empty body, and has no cancelling state
        seen = await retrieve(spec, batch_id, key, client=client)
        if not seen.terminal:
            seen.state = "cancelling"
        return seen
    status: BatchStatus = module.parse_batch(_json(raw, spec))
    return status


async def results(
    spec: ProviderSpec,
    model: str,
    status: BatchStatus,
    key: Secret | None,
    *,
    client: AsyncHTTPClient,
) -> list[ItemOutcome]:
    """Every item outcome of a batch that ended (output and error files, or inline)."""
    module = batch_wire(spec.wire)
    base = _base_url(spec, key)
    if spec.wire == "gemini":
        return list(module.parse_results(spec.name, model, status.inline or []))
    out: list[ItemOutcome] = []
    for ref in status.outputs:
        url = module.content_url(base, ref) if spec.wire == "openai" else ref
        raw = await _send(spec, key, client, "GET", url)
        out.extend(module.parse_results(spec.name, model, raw.decode("utf-8")))
    return out
