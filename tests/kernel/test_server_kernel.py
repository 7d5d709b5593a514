"""A real Jupyter server, a kernel it started, and %%byok routed through the server.

The kernel must never hold the plaintext key: the server stores it, the kernel's client
finds its own server through JPY_PARENT_PID and the runtime files, and the call goes
through POST /byok/complete. The ledger row records the notebook as the call's origin.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tornado.websocket import websocket_connect

from jupyter_byok.testing import FakeProviders

CANARY = "sk-proj-KERNELCANARY" + "k" * 40 + "T3BlbkFJ" + "n" * 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, url: str, token: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.token, self.proc, self.log = url, token, proc, log
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"token {token}"}, timeout=60, trust_env=False
        )


@pytest.fixture
def server(tmp_path: Path, fake_providers: FakeProviders, byok_home: Path) -> Iterator[Server]:
    port, token = free_port(), uuid.uuid4().hex
    root = tmp_path / "notebooks"
    root.mkdir()
    env = {
        **os.environ,
        **fake_providers.env(),
        "JUPYTER_BYOK_HOME": str(byok_home),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "HOME": str(tmp_path),
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
                f"--port={port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
                f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                "--log-level=DEBUG",
            ],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    srv = Server(f"http://127.0.0.1:{port}/", token, proc, log)
    deadline = time.monotonic() + 60
    while True:
        try:
            if srv.http.get("byok/status").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the Jupyter server did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.2)
    try:
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        srv.http.close()


async def execute(
    server: Server, kernel_id: str, code: str, timeout: float = 120
) -> dict[str, Any]:
    """Run code in a kernel over the server's websocket; collect its outputs."""
    ws_url = (
        server.url.replace("http", "ws") + f"api/kernels/{kernel_id}/channels?token={server.token}"
    )
    conn = await websocket_connect(ws_url)
    msg_id = uuid.uuid4().hex
    conn.write_message(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "username": "test",
                    "session": uuid.uuid4().hex,
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "channel": "shell",
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": True,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
            }
        )
    )
    result: dict[str, Any] = {
        "stdout": "",
        "stderr": "",
        "outputs": [],
        "updates": 0,
        "error": None,
    }
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            raw = await conn.read_message()
            assert raw is not None, "the kernel websocket closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                result[content["name"]] += content["text"]
            elif kind in ("display_data", "execute_result"):
                result["outputs"].append(content)
            elif kind == "update_display_data":
                result["updates"] += 1
                result["outputs"].append(content)
            elif kind == "error":
                result["error"] = content
            elif kind == "status" and content["execution_state"] == "idle":
                return result
        raise TimeoutError(f"no idle from the kernel in {timeout} s: {result}")
    finally:
        conn.close()


async def test_magic_in_a_server_kernel_never_holds_the_key(
    server: Server, fake_providers: FakeProviders, byok_home: Path
) -> None:
    added = server.http.post("byok/keys", json={"provider": "openai", "key": CANARY})
    assert added.status_code == 201, added.text

    session = server.http.post(
        "api/sessions",
        json={
            "path": "analysis.ipynb",
            "type": "notebook",
            "name": "analysis.ipynb",
            "kernel": {"name": "python3"},
        },
    )
    assert session.status_code == 201, session.text
    kernel_id = session.json()["kernel"]["id"]

    probe = await execute(
        server,
        kernel_id,
        "import jupyter_byok, jupyter_byok.keys.store as ks\n"
        "_decrypts = []\n"
        "_orig_get = ks.Keystore.get\n"
        "def _spy(self, *a, **k):\n"
        "    _decrypts.append(a)\n"
        "    return _orig_get(self, *a, **k)\n"
        "ks.Keystore.get = _spy\n"
        "%load_ext jupyter_byok\n"
        "from jupyter_byok.client import get_client\n"
        "print('transport', get_client().transport)",
    )
    assert probe["error"] is None, probe
    assert "transport server" in probe["stdout"], probe

    run = await execute(
        server, kernel_id, "%%byok openai:gpt-4o-mini -o answer\nHello from the kernel"
    )
    assert run["error"] is None and not run["stderr"], run
    shown = json.dumps(run["outputs"])
    assert "Echo: Hello from the kernel" in shown
    assert run["updates"] >= 1, "the answer should stream into an updating display"

    check = await execute(
        server,
        kernel_id,
        "import os, json\n"
        "from jupyter_byok import redact\n"
        "print(json.dumps({'decrypts': len(_decrypts), 'secrets_seen': len(redact._known),\n"
        "  'env': any(v.startswith('sk-') for v in os.environ.values()),\n"
        "  'text': answer.text, 'ledger_id': answer.ledger_id}))",
    )
    facts = json.loads(check["stdout"].strip().splitlines()[-1])
    assert facts["decrypts"] == 0, "the kernel decrypted a key"
    assert facts["secrets_seen"] == 0, "a plaintext secret was held in the kernel"
    assert facts["env"] is False
    assert facts["text"] == "Echo: Hello from the kernel"

    # The key went to the provider, from the server.
    assert fake_providers.requests_for("openai")[-1].auth == CANARY

    # The ledger row has the notebook as its origin.
    usage = server.http.get("byok/usage", params={"since": "today", "by": "notebook"}).json()
    notebooks = [g.get("notebook") for g in usage["groups"]]
    assert any(str(n).endswith("analysis.ipynb") for n in notebooks), usage
    import jupyter_byok

    frame = jupyter_byok.usage()
    row = frame[frame["feature"] == "magic"]
    assert len(row) == 1 and str(row["notebook"].iloc[0]).endswith("analysis.ipynb")

    everything = shown + json.dumps(usage) + server.log.read_text()
    assert CANARY not in everything
    for path in byok_home.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


async def test_interrupting_the_cell_cancels_the_provider_request(
    server: Server, fake_providers: FakeProviders, byok_home: Path
) -> None:
    import asyncio

    assert (
        server.http.post("byok/keys", json={"provider": "openai", "key": CANARY}).status_code == 201
    )
    session = server.http.post(
        "api/sessions",
        json={
            "path": "slow.ipynb",
            "type": "notebook",
            "name": "slow.ipynb",
            "kernel": {"name": "python3"},
        },
    )
    kernel_id = session.json()["kernel"]["id"]
    warm = await execute(server, kernel_id, "%load_ext jupyter_byok")
    assert warm["error"] is None, warm

    fake_providers.set_latency("openai", 30.0)
    run = asyncio.create_task(
        execute(server, kernel_id, "%%byok openai:gpt-4o-mini\nthis will take long")
    )
    deadline = time.monotonic() + 30
    while not fake_providers.requests_for("openai") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert fake_providers.requests_for("openai"), "the request never reached the provider"
    started = time.monotonic()
    assert server.http.post(f"api/kernels/{kernel_id}/interrupt").status_code == 204
    result = await asyncio.wait_for(run, 20)
    assert time.monotonic() - started < 10, "the interrupt did not stop the call promptly"
    assert "interrupted" in result["stderr"], result
    assert result["error"] is None  # one red line, no traceback

    # The server cancelled its side too: the attempt is recorded as cancelled.
    deadline = time.monotonic() + 10
    statuses: list[str] = []
    while time.monotonic() < deadline:
        recent = server.http.get("byok/usage", params={"since": "today"}).json()["recent"]
        statuses = [r["status"] for r in recent]
        if statuses:
            break
        await asyncio.sleep(0.2)
    assert statuses == ["cancelled"], statuses


def test_a_server_without_the_extension_gets_a_clear_message() -> None:
    from jupyter_byok.client import _error_from_json

    message = str(_error_from_json({}, 404))
    assert "server extension enable jupyter_byok" in message
    assert (
        str(_error_from_json({"error": "NotFound", "message": "no key id x"}, 404)) == "no key id x"
    )
