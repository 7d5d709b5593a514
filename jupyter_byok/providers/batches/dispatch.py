"""The one place batch HTTP calls are made (the chat calls' is :mod:`..dispatch`).

Invariants, as for chat calls: the key is revealed only inside the chat wire module's
``auth_headers``, a bound key goes to its own origin only (``dispatch._auth``), errors are
mapped once (:func:`..base.error_from_response`) and never carry the key or a body we sent.
A request that creates something (an upload, a batch) is not retried after a transport
error or a timeout, where the provider may already have made it; polls and downloads are.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, ProviderError, ResponseTooLargeError
from .. import ProviderSpec
from ..base import (
    Limits,
    RetryPolicy,
    error_from_exception,
    error_from_response,
    read_body,
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
#: the largest result file read (``JUPYTER_BYOK_MAX_BATCH_RESULT_BYTES``): a result file
#: is held in memory while its items are parsed one by one
MAX_RESULT_BYTES = 1024**3


def max_result_bytes() -> int:
    """The cap on one downloaded result file, from the environment or the default."""
    raw = os.environ.get("JUPYTER_BYOK_MAX_BATCH_RESULT_BYTES", "").strip()
    if not raw:
        return MAX_RESULT_BYTES
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError(
            f"JUPYTER_BYOK_MAX_BATCH_RESULT_BYTES={raw!r} is not a positive whole number of "
            "bytes: fix or unset it"
        )
    return int(raw)


async def _capped_body(spec: ProviderSpec, response: Any, cap: int) -> bytes:
    """The body of a result download, refused past ``cap`` bytes (never retried: the
    batch stays at the provider, and a later fetch with a higher cap reads it)."""
    try:
        return await read_body(response, spec.name, Limits(max_response_bytes=cap))
    except ResponseTooLargeError:
        raise ResponseTooLargeError(
            f"{spec.name} batch results are larger than {cap:,} bytes, so the download "
            "stopped; nothing is lost (the batch stays at the provider): raise "
            "JUPYTER_BYOK_MAX_BATCH_RESULT_BYTES and fetch again, or split the map into "
            "smaller batches",
            provider=spec.name,
            status_code=200,
            error_type="response_too_large",
        ) from None
    except ProviderError as exc:  # a download cut off: retried like any transport error
        if isinstance(exc.__cause__, transport_errors()):
            raise exc.__cause__ from None
        raise


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
    params: dict[str, str] | None = None,
    max_bytes: int | None = None,
) -> bytes:
    """The body of a 2xx answer; retries what ``policy`` allows. With ``max_bytes`` (a
    result download) the body is read as it comes and refused past that size."""
    headers = dict(_auth(_wire(spec), spec, key, url))
    if content is not None:
        headers["content-type"] = content_type
    number = 0
    while True:
        try:
            response = await send_request(
                client,
                method,
                url,
                content=content,
                headers=headers,
                params=params,
                timeout=TIMEOUT,
                stream=max_bytes is not None,
            )
            if max_bytes is not None and 200 <= response.status_code < 300:
                return await _capped_body(spec, response, max_bytes)
            if max_bytes is not None:
                await response.aread()
                await response.aclose()
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
    as_file: bool = False,
) -> BatchStatus:
    """Upload and create one batch of item lines (built by the wire module's ``item_line``,
    or for a Gemini file, ``file_line`` with ``as_file``)."""
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
    elif not as_file:
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
    else:  # Gemini, a file of requests
        file_name = await _gemini_upload(spec, key, client, base, b"\n".join(lines) + b"\n")
        raw = await _send(
            spec,
            key,
            client,
            "POST",
            module.create_url(base, model),
            content=module.wrap(module.file_create_content(file_name, name)),
            policy=CREATE,
            creates=True,
        )
    status: BatchStatus = module.parse_batch(_json(raw, spec))
    return status


async def _gemini_upload(
    spec: ProviderSpec, key: Secret | None, client: AsyncHTTPClient, base: str, data: bytes
) -> str:
    """The Files API's resumable upload: start (the answer names the upload URL), then
    one ``upload, finalize`` of the whole file; returns the file's name (``files/...``)."""
    from . import gemini

    url = gemini.upload_url(base)
    headers = dict(_auth(_wire(spec), spec, key, url))
    headers.update(
        {
            "content-type": "application/json",
            "x-goog-upload-protocol": "resumable",
            "x-goog-upload-command": "start",
            "x-goog-upload-header-content-length": str(len(data)),
            "x-goog-upload-header-content-type": "application/jsonl",
        }
    )
    start = await _raw(
        spec, client, "POST", url, headers, b'{"file":{"mimeType":"application/jsonl"}}'
    )
    target = start.headers.get("x-goog-upload-url")
    if not target:
        raise ProviderError(
            f"{spec.name} did not say where to upload the batch file; try again",
            provider=spec.name,
            error_type="malformed_answer",
        )
    # The upload URL is its own credential: no key goes there, and the file only goes to
    # the provider's own origin.
    if _origin(target) != _origin(url):
        raise ProviderError(
            f"{spec.name} answered an upload URL on another origin; not uploading",
            provider=spec.name,
            error_type="malformed_answer",
        )
    headers = {"x-goog-upload-command": "upload, finalize", "x-goog-upload-offset": "0"}
    done = await _raw(spec, client, "POST", target, headers, data)
    file = (_json(done.content, spec) or {}).get("file") or {}
    if not str(file.get("name", "")).startswith("files/"):
        raise ProviderError(
            f"{spec.name} did not name the uploaded batch file; try again",
            provider=spec.name,
            error_type="malformed_answer",
        )
    return str(file["name"])


def _origin(url: str) -> tuple[str, str, int | None]:
    import httpx

    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port


async def _raw(
    spec: ProviderSpec,
    client: AsyncHTTPClient,
    method: str,
    url: str,
    headers: dict[str, str],
    content: bytes,
) -> Any:
    """One request that creates something: never resent; an error answer is raised."""
    try:
        response = await send_request(
            client, method, url, content=content, headers=headers, timeout=TIMEOUT
        )
    except transport_errors() as exc:
        raise error_from_exception(spec.name, exc, url.split("?")[0]) from None
    if not 200 <= response.status_code < 300:
        raise error_from_response(
            spec.name, response.status_code, response.headers, response.content
        )
    return response


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
) -> Iterator[ItemOutcome]:
    """Every item outcome of a batch that ended (output and error files, or inline), read
    one at a time from the downloaded bodies (100,000 parsed answers would not fit the
    memory a notebook can spare)."""
    module = batch_wire(spec.wire)
    base = _base_url(spec, key)
    if spec.wire == "gemini" and status.inline is not None:
        return iter(module.parse_results(spec.name, model, status.inline))
    bodies = []
    cap = max_result_bytes()
    for ref in status.outputs:
        if spec.wire == "openai":
            url = module.content_url(base, ref)
        elif spec.wire == "gemini":
            url = module.download_url(base, ref)
        else:
            url = ref
        params = {"alt": "media"} if spec.wire == "gemini" else None
        bodies.append(await _send(spec, key, client, "GET", url, params=params, max_bytes=cap))
    parse = module.parse_file_results if spec.wire == "gemini" else module.parse_results
    return itertools.chain.from_iterable(parse(spec.name, model, body) for body in bodies)
