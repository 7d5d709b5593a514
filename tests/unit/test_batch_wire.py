"""Batch wire formats against the fake providers' batch endpoints, and the fakes' batch
endpoints against the official SDKs (``openai``, ``anthropic``, ``google-genai``)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator

import anthropic
import httpx
import openai
import pytest
import pytest_asyncio
from google import genai
from google.genai import types as genai_types

from jupyter_byok.errors import BadRequestError
from jupyter_byok.providers import BUILTIN
from jupyter_byok.providers.batches import SizeLimits, batch_wire, dispatch, split
from jupyter_byok.redact import Secret
from jupyter_byok.testing import FakeProviders
from jupyter_byok.types import Message

pytest_plugins = ["jupyter_byok.testing.pytest_plugin"]

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


@pytest.fixture
def env(fake_providers: FakeProviders, monkeypatch: pytest.MonkeyPatch) -> FakeProviders:
    for name, value in fake_providers.env().items():
        monkeypatch.setenv(name, value)
    return fake_providers


def lines_for(provider: str, n: int, prefix: str = "r") -> list[bytes]:
    spec = BUILTIN[provider]
    from jupyter_byok.providers.dispatch import _wire

    chat = _wire(spec)
    wire = batch_wire(spec.wire)
    out = []
    for i in range(n):
        req = chat.chat_request(
            provider,
            "http://x",
            MODELS[provider],
            [Message("user", f"item {i} words")],
            {"max_tokens": 20},
            stream=False,
        )
        out.append(wire.item_line(f"{prefix}{i}", req.json))
    return out


KEY = Secret("sk-batch-test-0000000000")


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_round_trip_with_states_and_item_failures(
    provider: str, env: FakeProviders, client: httpx.AsyncClient
) -> None:
    spec = BUILTIN[provider]
    env.batches.set_timing(validating=0.15, in_progress=0.5, finalizing=0.0)
    env.batches.fail_items(provider, "error", custom_ids=["r1"])
    env.batches.fail_items(provider, "expired", custom_ids=["r2"])
    status = await dispatch.create(
        spec, MODELS[provider], lines_for(provider, 4), KEY, client=client, name="t"
    )
    seen = [status.state]
    while not status.terminal:
        time.sleep(0.05)
        status = await dispatch.retrieve(spec, status.batch_id, KEY, client=client)
        seen.append(status.state)
    first = "in_progress" if provider == "anthropic" else "validating"  # no validating state
    assert seen[0] == first and "in_progress" in seen and seen[-1] == "completed"
    outcomes = {
        o.custom_id: o
        for o in await dispatch.results(spec, MODELS[provider], status, KEY, client=client)
    }
    assert set(outcomes) == {"r0", "r1", "r2", "r3"}
    assert outcomes["r0"].status == "ok" and outcomes["r0"].result is not None
    assert outcomes["r0"].result.text == "Echo: item 0 words"
    assert outcomes["r0"].result.usage.input_tokens == 3
    assert outcomes["r0"].result.usage.output_tokens == 4
    assert outcomes["r1"].status == "error" and outcomes["r1"].error_message
    assert outcomes["r2"].status == "expired"
    # the key only ever went in the provider's own auth header, never a body or URL
    for r in env.requests:
        assert KEY.reveal() not in r.path and KEY.reveal() not in json.dumps(r.body)
    assert env.errors == []


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_cancel_and_failed_batch(
    provider: str, env: FakeProviders, client: httpx.AsyncClient
) -> None:
    spec = BUILTIN[provider]
    env.batches.hold = True
    status = await dispatch.create(
        spec, MODELS[provider], lines_for(provider, 3), KEY, client=client, name="t"
    )
    assert status.state in ("validating", "in_progress")
    status = await dispatch.cancel(spec, status.batch_id, KEY, client=client)
    assert status.state in ("cancelling", "cancelled")
    time.sleep(0.06)
    status = await dispatch.retrieve(spec, status.batch_id, KEY, client=client)
    assert status.state == "cancelled"
    outcomes = await dispatch.results(spec, MODELS[provider], status, KEY, client=client)
    assert sorted(o.status for o in outcomes) == ["cancelled"] * 3
    env.batches.hold = False
    env.batches.fail_batch(provider, "line 1: bad model")
    status = await dispatch.create(
        spec, MODELS[provider], lines_for(provider, 2), KEY, client=client, name="t"
    )
    status = await dispatch.retrieve(spec, status.batch_id, KEY, client=client)
    if provider == "anthropic":  # Anthropic validates on create: no failed state
        assert status.state == "completed"
    else:
        assert status.state == "failed"
        if provider == "openai":
            assert "bad model" in status.message


def test_split_respects_requests_and_bytes() -> None:
    lines = [b"x" * 10] * 25
    assert split(lines, SizeLimits(max_requests=10, max_bytes=10**6)) == [
        (0, 10),
        (10, 20),
        (20, 25),
    ]
    assert split(lines, SizeLimits(max_requests=100, max_bytes=55)) == [
        (i, min(i + 5, 25)) for i in range(0, 25, 5)
    ]
    with pytest.raises(BadRequestError, match="mode='sync'"):
        split([b"x" * 100], SizeLimits(max_requests=10, max_bytes=50))


# ------------------------------------------------------------------ the official SDKs
def test_openai_sdk_drives_the_fake_batch_api(fake_providers: FakeProviders) -> None:
    sdk = openai.OpenAI(api_key="sk-sdk", base_url=fake_providers.base_url("openai"))
    fake_providers.batches.fail_items("openai", "error", custom_ids=["r1"])
    data = b"\n".join(lines_for("openai", 3)) + b"\n"
    uploaded = sdk.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(data)
    batch = sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = sdk.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 1)
    assert batch.output_file_id and batch.error_file_id
    out = [json.loads(x) for x in sdk.files.content(batch.output_file_id).text.splitlines()]
    assert {o["custom_id"] for o in out} == {"r0", "r2"}
    body = openai.types.chat.ChatCompletion.model_validate(out[0]["response"]["body"])
    assert body.usage is not None and body.usage.prompt_tokens == 3
    fake_providers.batches.hold = True
    held = sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert sdk.batches.cancel(held.id).status == "cancelling"
    time.sleep(0.06)
    assert sdk.batches.retrieve(held.id).status == "cancelled"


def test_anthropic_sdk_drives_the_fake_message_batches(fake_providers: FakeProviders) -> None:
    sdk = anthropic.Anthropic(api_key="sk-ant-sdk", base_url=fake_providers.base_url("anthropic"))
    fake_providers.batches.fail_items("anthropic", "expired", custom_ids=["b"])
    params = {
        "model": "claude-haiku-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hello there"}],
    }
    batch = sdk.messages.batches.create(
        requests=[{"custom_id": "a", "params": params}, {"custom_id": "b", "params": params}]
    )
    batch = sdk.messages.batches.retrieve(batch.id)
    assert batch.processing_status == "ended"
    assert (batch.request_counts.succeeded, batch.request_counts.expired) == (1, 1)
    results = {r.custom_id: r.result for r in sdk.messages.batches.results(batch.id)}
    assert results["a"].type == "succeeded" and results["b"].type == "expired"
    assert results["a"].message.usage.input_tokens == 2
    fake_providers.batches.hold = True
    held = sdk.messages.batches.create(requests=[{"custom_id": "c", "params": params}])
    assert sdk.messages.batches.cancel(held.id).processing_status == "canceling"
    time.sleep(0.06)
    assert sdk.messages.batches.retrieve(held.id).processing_status == "ended"


def test_genai_sdk_drives_the_fake_batch_mode(fake_providers: FakeProviders) -> None:
    sdk = genai.Client(
        api_key="AIza-sdk",
        http_options=genai_types.HttpOptions(base_url=fake_providers.base_url("gemini")),
    )
    job = sdk.batches.create(
        model="gemini-2.5-flash",
        src=[
            {
                "contents": [{"parts": [{"text": "hello there"}], "role": "user"}],
                "metadata": {"key": "k1"},
            }
        ],
    )
    assert job.name and job.name.startswith("batches/")
    job = sdk.batches.get(name=job.name)
    assert job.state == genai_types.JobState.JOB_STATE_SUCCEEDED
    assert job.dest is not None and job.dest.inlined_responses
    first = job.dest.inlined_responses[0]
    assert first.response is not None and first.response.text == "Echo: hello there"


@pytest.mark.asyncio
async def test_gemini_large_batches_go_as_a_file(
    env: FakeProviders, client: httpx.AsyncClient
) -> None:
    spec = BUILTIN["gemini"]
    module = batch_wire("gemini")
    env.batches.fail_items("gemini", "error", custom_ids=["r1"])
    lines = [
        module.file_line(f"r{i}", json.loads(line)["request"])
        for i, line in enumerate(lines_for("gemini", 3))
    ]
    status = await dispatch.create(
        spec, MODELS["gemini"], lines, KEY, client=client, name="t", as_file=True
    )
    status = await dispatch.retrieve(spec, status.batch_id, KEY, client=client)
    assert status.state == "completed" and status.inline is None
    assert status.outputs and status.outputs[0].startswith("files/")
    outcomes = {
        o.custom_id: o
        for o in await dispatch.results(spec, MODELS["gemini"], status, KEY, client=client)
    }
    assert outcomes["r0"].result is not None and outcomes["r0"].result.text == "Echo: item 0 words"
    assert outcomes["r1"].status == "error" and outcomes["r2"].status == "ok"
    uploads = [r for r in env.requests if "/upload/" in r.path]
    assert [r.headers.get("x-goog-upload-command") for r in uploads] == [
        "start",
        "upload, finalize",
    ]
    assert uploads[0].auth == KEY.reveal() and uploads[1].auth == ""  # the URL is the credential
    assert env.errors == []


def test_genai_sdk_drives_the_fake_batch_files(fake_providers: FakeProviders) -> None:
    sdk = genai.Client(
        api_key="AIza-sdk",
        http_options=genai_types.HttpOptions(base_url=fake_providers.base_url("gemini")),
    )
    line = {
        "key": "k1",
        "request": {"contents": [{"parts": [{"text": "hello file"}], "role": "user"}]},
    }
    uploaded = sdk.files.upload(
        file=io.BytesIO((json.dumps(line) + "\n").encode()),
        config={"mime_type": "application/jsonl", "display_name": "requests"},
    )
    assert uploaded.name and uploaded.name.startswith("files/")
    job = sdk.batches.create(model="gemini-2.5-flash", src=uploaded.name)
    assert job.name is not None
    job = sdk.batches.get(name=job.name)
    assert job.state == genai_types.JobState.JOB_STATE_SUCCEEDED
    assert job.dest is not None and job.dest.file_name
    out = [json.loads(x) for x in sdk.files.download(file=job.dest.file_name).splitlines()]
    assert out[0]["key"] == "k1"
    assert out[0]["response"]["candidates"][0]["content"]["parts"][0]["text"] == "Echo: hello file"


@pytest.mark.asyncio
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_a_batch_that_expires(
    provider: str, env: FakeProviders, client: httpx.AsyncClient
) -> None:
    spec = BUILTIN[provider]
    env.batches.expire_batch(provider)
    status = await dispatch.create(
        spec, MODELS[provider], lines_for(provider, 2), KEY, client=client, name="t"
    )
    status = await dispatch.retrieve(spec, status.batch_id, KEY, client=client)
    assert status.state == "expired" and status.terminal
    outcomes = list(await dispatch.results(spec, MODELS[provider], status, KEY, client=client))
    # OpenAI and Anthropic list each expired item; Gemini returns none (all count as expired)
    assert all(o.status == "expired" for o in outcomes)
    assert len(outcomes) == (0 if provider == "gemini" else 2)
