"""The loopback fake providers themselves: routing, auth checks, faults, recording, CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from jupyter_byok.providers import BUILTIN
from jupyter_byok.testing import FakeProviders, tokens
from jupyter_byok.testing.wire import UsagePlan

pytest_plugins = ["jupyter_byok.testing.pytest_plugin"]

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two"}]}


def test_env_points_each_provider_at_a_base_url_with_the_real_meaning(
    fake_providers: FakeProviders,
) -> None:
    env = fake_providers.env()
    assert set(env) == {
        "JUPYTER_BYOK_OPENAI_BASE_URL",
        "JUPYTER_BYOK_ANTHROPIC_BASE_URL",
        "JUPYTER_BYOK_GEMINI_BASE_URL",
        "JUPYTER_BYOK_XAI_BASE_URL",
        "JUPYTER_BYOK_TAVILY_BASE_URL",
    }
    assert env["JUPYTER_BYOK_OPENAI_BASE_URL"].endswith("/openai/v1")
    assert env["JUPYTER_BYOK_XAI_BASE_URL"].endswith("/xai/v1")
    assert not env["JUPYTER_BYOK_ANTHROPIC_BASE_URL"].endswith("/v1")
    for name, value in env.items():
        assert value.startswith("http://127.0.0.1:")
        assert os.environ[name] == value  # the fixture set them
    for provider in ("openai", "anthropic", "gemini", "xai", "tavily"):
        assert BUILTIN[provider].resolved_base_url() == fake_providers.base_url(provider)


def test_openai_wire_and_recording(fake_providers: FakeProviders) -> None:
    url = fake_providers.base_url("openai") + "/chat/completions"
    r = httpx.post(url, json=CHAT, headers={"Authorization": "Bearer sk-1"})
    assert r.status_code == 200 and r.headers["x-request-id"].startswith("req_")
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Echo: one two"
    assert body["usage"]["prompt_tokens"] == tokens("one two") == 2
    assert body["usage"]["total_tokens"] == 2 + 3
    rec = fake_providers.requests[-1]
    assert (rec.provider, rec.method, rec.path, rec.body) == (
        "openai",
        "POST",
        "/openai/v1/chat/completions",
        CHAT,
    )
    assert rec.auth == "sk-1" and rec.headers["authorization"] == "Bearer sk-1"
    missing = httpx.post(url, json=CHAT)
    assert missing.status_code == 401
    assert missing.json()["error"]["message"].startswith("You didn't provide an API key")


def test_openai_stream_frames(fake_providers: FakeProviders) -> None:
    url = fake_providers.base_url("openai") + "/chat/completions"
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    r = httpx.post(url, json=body, headers={"Authorization": "Bearer sk-1"})
    assert r.headers["content-type"] == "text/event-stream"
    frames = r.text.split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    assert '"choices":[],"usage":{"prompt_tokens":2' in frames[-3]
    assert all(f.startswith("data: ") for f in frames[:-1])
    assert '"usage":null' in frames[0]


def test_anthropic_accepts_both_header_styles(fake_providers: FakeProviders) -> None:
    url = fake_providers.base_url("anthropic") + "/v1/messages"
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    version = {"anthropic-version": "2023-06-01"}
    for auth in ({"x-api-key": "k1"}, {"authorization": "Bearer k1"}):
        r = httpx.post(url, json=body, headers={**version, **auth})
        assert r.status_code == 200 and r.headers["request-id"].startswith("req_")
        assert r.json()["content"] == [{"type": "text", "text": "Echo: hi"}]
    no_version = httpx.post(url, json=body, headers={"x-api-key": "k1"})
    assert no_version.status_code == 400
    assert no_version.json()["error"]["message"] == "anthropic-version: header is required"
    fake_providers.set_keys("anthropic", "good")
    bad = httpx.post(url, json=body, headers={**version, "x-api-key": "k1"})
    assert bad.status_code == 401
    assert bad.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": bad.json()["request_id"],
    }
    fake_providers.set_keys("anthropic")
    no_max = {k: v for k, v in body.items() if k != "max_tokens"}
    refused = httpx.post(url, json=no_max, headers={**version, "x-api-key": "k1"})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "max_tokens: Field required"


def test_gemini_crlf_stream_and_query_key(fake_providers: FakeProviders) -> None:
    base = fake_providers.base_url("gemini") + "/v1beta/models/gemini-2.5-flash"
    body = {"contents": [{"role": "user", "parts": [{"text": "a b c"}]}]}
    r = httpx.post(
        base + ":streamGenerateContent",
        params={"alt": "sse"},
        json=body,
        headers={"x-goog-api-key": "k"},
    )
    raw = r.content
    assert raw.endswith(b"\r\n\r\n") and b"\n\n" not in raw.replace(b"\r\n\r\n", b"")
    frames = [f for f in raw.split(b"\r\n\r\n") if f]
    assert len(frames) == 4  # "Echo:", " a", " b", " c"
    assert all(f.startswith(b"data: ") and b"usageMetadata" in f for f in frames)
    assert b'"finishReason":"STOP"' in frames[-1] and b"finishReason" not in frames[0]
    # the ?key= query form is accepted too (and recorded, so tests can forbid it)
    q = httpx.post(base + ":generateContent", params={"key": "k"}, json=body)
    assert q.status_code == 200 and fake_providers.requests[-1].query["key"] == ["k"]
    denied = httpx.post(base + ":generateContent", json=body)
    assert denied.status_code == 403 and denied.json()["error"]["status"] == "PERMISSION_DENIED"


def test_faults_are_consumed_in_order(fake_providers: FakeProviders) -> None:
    url = fake_providers.base_url("xai") + "/chat/completions"
    headers = {"Authorization": "Bearer xai-k"}
    fake_providers.add_fault("xai", "rate_limit", times=2, retry_after="7", should_retry=True)
    fake_providers.add_fault("xai", "server_error")
    statuses = [httpx.post(url, json=CHAT, headers=headers) for _ in range(4)]
    assert [r.status_code for r in statuses] == [429, 429, 500, 200]
    assert statuses[0].headers["retry-after"] == "7"
    assert statuses[0].headers["x-should-retry"] == "true"
    assert set(statuses[0].json()) == {"code", "error"}  # xAI's own error shape
    with pytest.raises(ValueError, match="unknown fault kind"):
        fake_providers.add_fault("xai", "nonsense")
    with pytest.raises(ValueError, match="unknown fake provider"):
        fake_providers.add_fault("nobody", "rate_limit")


def test_models_endpoints_and_unprefixed_routing(fake_providers: FakeProviders) -> None:
    root = fake_providers.url
    openai_models = httpx.get(root + "/v1/models", headers={"Authorization": "Bearer sk-1"})
    assert openai_models.json()["data"][0]["id"] == "gpt-4o-mini"
    xai_models = httpx.get(root + "/v1/models", headers={"Authorization": "Bearer xai-1"})
    assert xai_models.json()["data"][0]["id"] == "grok-4.3"
    anthropic_models = httpx.get(
        root + "/v1/models", headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}
    )
    assert anthropic_models.json()["has_more"] is False
    gemini_models = httpx.get(root + "/v1beta/models", headers={"x-goog-api-key": "k"})
    assert gemini_models.json()["models"][0]["name"] == "models/gemini-2.5-flash"
    usage = httpx.get(root + "/usage", headers={"Authorization": "Bearer tvly-1"})
    assert usage.json()["key"] == {"usage": 12, "limit": 1000}
    api_key = httpx.get(root + "/xai/v1/api-key", headers={"Authorization": "Bearer xai-12345678"})
    assert api_key.json()["redacted_api_key"] == "xai-****5678"
    assert [r.provider for r in fake_providers.requests] == [
        "openai",
        "xai",
        "anthropic",
        "gemini",
        "tavily",
        "xai",
    ]


def test_latency_and_reset(fake_providers: FakeProviders) -> None:
    url = fake_providers.base_url("tavily") + "/search"
    fake_providers.latency = 0.2
    start = time.perf_counter()
    r = httpx.post(url, json={"query": "x"}, headers={"Authorization": "Bearer t"})
    assert r.status_code == 200 and time.perf_counter() - start >= 0.2
    fake_providers.add_fault("tavily", "server_error")
    fake_providers.set_usage("tavily", reasoning=1)
    fake_providers.reset()
    assert fake_providers.requests == [] and fake_providers.latency == 0.0
    start = time.perf_counter()
    assert httpx.post(url, json={"query": "x"}, headers={"Authorization": "Bearer t"}).is_success
    assert time.perf_counter() - start < 0.2


def test_usage_plan_is_clamped_to_the_prompt() -> None:
    from jupyter_byok.testing.wire import Answer

    answer = Answer.for_prompt(["a b c"], "a b c", None, UsagePlan(cached=10, cache_write_5m=4))
    assert (answer.input_tokens, answer.cached, answer.writes) == (3, 3, (0, 0))
    usage = answer.anthropic_usage()
    assert usage["input_tokens"] == 0 and usage["cache_read_input_tokens"] == 3


def test_refuses_to_listen_beyond_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FakeProviders(host="0.0.0.0")


def test_command_line_prints_exports_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_byok.testing"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(5)]
        assert all(line.startswith("export JUPYTER_BYOK_") for line in lines)
        openai_url = next(line for line in lines if "OPENAI" in line).split("=", 1)[1]
        r = httpx.post(
            openai_url + "/chat/completions", json=CHAT, headers={"Authorization": "Bearer k"}
        )
        assert r.json()["choices"][0]["message"]["content"] == "Echo: one two"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
