"""``/byok/local/*`` on a real in-process Jupyter server, pulling from the loopback Hub.

The server downloads and inspects; "Test" answers from a child process (the server's own
process refuses local inference). The Hub token is a canary that must not come back in
any reply, header or log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_byok.errors import LocalModelError
from jupyter_byok.keys import Keystore
from jupyter_byok.providers import local
from jupyter_byok.testing.hub import EMBEDDED_FILENAME, EMBEDDED_REPO, FakeHub

TOKEN = "hf_byokservercanary" + secrets.token_hex(16)
SPEC = f"hf:{EMBEDDED_REPO}/{EMBEDDED_FILENAME}"


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_byok": True}, "allow_root": True}}


@pytest.fixture
def seen(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    out: list[str] = []
    caplog.set_level(logging.DEBUG)
    yield out
    out.extend(caplog.text.splitlines())
    assert not [s for s in out if TOKEN in s], "the Hub token leaked"


async def call(jp_fetch: Any, seen: list[str], *path: str, **kwargs: Any) -> tuple[int, Any]:
    kwargs.setdefault("raise_error", False)
    response = await jp_fetch("byok", "local", *path, **kwargs)
    body = response.body.decode() if response.body else ""
    seen.append(body)
    seen.extend(f"{k}: {v}" for k, v in response.headers.get_all())
    return response.code, (json.loads(body) if body else None)


async def wait_for(jp_fetch: Any, seen: list[str], job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        code, job = await call(jp_fetch, seen, "pulls", job_id)
        assert code == 200, job
        if job["state"] != "running":
            return dict(job)
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


async def test_pull_list_test_default_remove_through_the_api(
    jp_fetch: Any, jp_serverapp: Any, fake_hub: FakeHub, seen: list[str]
) -> None:
    # the server process never runs a model: its engine refuses local: ids
    assert jp_serverapp.web_app.settings["jupyter_byok"].engine.allow_local is False
    fake_hub.add_repo("org/Gated-GGUF", gated=True, token=TOKEN)
    fake_hub.add_file("org/Gated-GGUF", "gated.gguf", local.embedded_model_path())

    # gated, no token: the job fails with the one line that says what to do
    code, job = await call(
        jp_fetch,
        seen,
        "pulls",
        method="POST",
        body=json.dumps({"spec": "hf:org/Gated-GGUF/gated.gguf"}),
    )
    assert code == 202 and job["state"] == "running"
    job = await wait_for(jp_fetch, seen, job["id"])
    assert job["state"] == "error" and "keys set secret --name huggingface" in job["error"]

    Keystore().set("secret", TOKEN, "huggingface")
    fake_hub.set_rate(60 * 1024**2)  # ~1.6 s: progress is visible while it runs
    code, job = await call(
        jp_fetch,
        seen,
        "pulls",
        method="POST",
        body=json.dumps({"spec": "hf:org/Gated-GGUF/gated.gguf", "name": "gated"}),
    )
    assert code == 202
    partial: list[int] = []
    while job["state"] == "running":
        await asyncio.sleep(0.1)
        _, job = await call(jp_fetch, seen, "pulls", job["id"])
        if job["progress"].get("phase") == "download":
            partial.append(job["progress"]["done_bytes"])
    assert job["state"] == "done", job
    # progress seen mid-download (a first poll may come before the first block arrives)
    assert any(0 < done < job["result"]["size_bytes"] for done in partial), partial
    assert job["progress"]["total_bytes"] == job["result"]["size_bytes"]

    code, data = await call(jp_fetch, seen, "models")
    assert code == 200
    rows = {row["name"]: row for row in data["models"]}
    assert rows["gated"]["quantization"] == "Q4_1" and rows["gated"]["downloaded"]
    assert rows["gated"]["context_length"] == 8192 and rows["gated"]["ram_estimate_bytes"] > 0
    assert data["default"] == "smollm2"

    # The test process may hold models loaded by earlier tests (one xdist worker runs many
    # tests): what matters is that this Test loads nothing here.
    loads_before = [(m["path"], m["loads"], m["calls"]) for m in local.loaded_models()]
    # a child process loads the model (after the crash-guard probe's own child on a first
    # load): on a loaded 2-core machine that can take longer than the client's default 20 s
    code, report = await call(
        jp_fetch, seen, "models", "gated", "test", method="POST", body="{}", request_timeout=120
    )
    assert code == 200, report
    assert report["text"] and report["output_tokens"] > 0 and report["tokens_per_s"] > 0
    # answered by a child, not by this (the server's) process
    assert [(m["path"], m["loads"], m["calls"]) for m in local.loaded_models()] == loads_before

    code, data = await call(
        jp_fetch, seen, "default", method="PUT", body=json.dumps({"name": "gated"})
    )
    assert code == 200 and data["default"] == "gated"
    _, data = await call(jp_fetch, seen, "models")
    assert data["default"] == "gated" and data["models"][1]["last_used"] is not None

    path = Path(rows["gated"]["path"])
    code, data = await call(jp_fetch, seen, "models", "gated", method="DELETE")
    assert code == 200 and data["deleted_file"] == str(path) and not path.exists()
    code, data = await call(jp_fetch, seen, "models", "gated", method="DELETE")
    assert code == 400 and "no local model named 'gated'" in data["message"]


async def test_cancel_keeps_the_part_and_bad_bodies_are_400(
    jp_fetch: Any, jp_serverapp: Any, fake_hub: FakeHub, seen: list[str]
) -> None:
    fake_hub.set_rate(20 * 1024**2)
    code, job = await call(jp_fetch, seen, "pulls", method="POST", body=json.dumps({"spec": SPEC}))
    assert code == 202
    await asyncio.sleep(0.5)
    code, job = await call(jp_fetch, seen, "pulls", job["id"], method="DELETE")
    assert code == 200 and job["state"] == "cancelled" and "pull again to resume" in job["error"]
    _, data = await call(jp_fetch, seen, "models")
    assert [row["name"] for row in data["models"]] == ["smollm2"]

    for body, message in (
        ({}, "'spec' is required"),
        ({"spec": SPEC, "token": TOKEN}, "unknown field(s) token"),
        ({"spec": 3}, "'spec' has the wrong type"),
        ({"spec": "ftp://x/y.gguf"}, "cannot pull"),
    ):
        code, data = await call(jp_fetch, seen, "pulls", method="POST", body=json.dumps(body))
        assert code == 400 and message in data["message"], data
    code, data = await call(jp_fetch, seen, "pulls", "0123456789abcdef")
    assert code == 404


async def test_a_kernel_pull_goes_through_the_server_and_never_reads_the_token(
    jp_fetch: Any,
    jp_serverapp: Any,
    jp_http_port: int,
    jp_base_url: str,
    fake_hub: FakeHub,
    seen: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``%byok local pull`` in a kernel: Client asks the server, which reads the Hub token
    from its keystore on its pull thread; the calling side only follows the progress."""
    import threading

    from jupyter_byok.client import Client, ServerInfo
    from jupyter_byok.keys import resolve

    fake_hub.add_repo("org/Gated-GGUF", gated=True, token=TOKEN)
    fake_hub.add_file("org/Gated-GGUF", "gated.gguf", local.embedded_model_path())
    Keystore().set("secret", TOKEN, "huggingface")
    fake_hub.set_rate(60 * 1024**2)
    readers: list[str] = []
    real = resolve.named_secret

    def spying(name: str, **kwargs: Any) -> Any:
        readers.append(threading.current_thread().name)
        return real(name, **kwargs)

    monkeypatch.setattr(resolve, "named_secret", spying)
    token = jp_serverapp.identity_provider.token
    client = Client(
        "server", server=ServerInfo(f"http://127.0.0.1:{jp_http_port}{jp_base_url}", token)
    )
    result = await client.alocal_pull("hf:org/Gated-GGUF/gated.gguf", name="gated2")
    seen.append(json.dumps(result))
    assert result["name"] == "gated2" and result["status"] == "pulled"
    assert result["facts"]["quantization"] == "Q4_1"
    # the token was read once, by the server's pull thread, not by the caller's
    assert readers and threading.main_thread().name not in readers

    # an error comes back as the job's one line
    with pytest.raises(
        LocalModelError, match=r"has no file 'missing.gguf' \(its GGUF files: gated.gguf\)"
    ) as info:
        await client.alocal_pull("hf:org/Gated-GGUF/missing.gguf")
    assert TOKEN not in str(info.value)
