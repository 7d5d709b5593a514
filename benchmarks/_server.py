"""One Jupyter server with jupyter_byok for a benchmark: a process of its own on 127.0.0.1,
with its own home, runtime and config folders, answering ``/byok/status`` before the
caller goes on; stopped (and its log closed) when the ``with`` block ends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str  # ends with "/"
    token: str
    headers: dict[str, str] = field(default_factory=dict)


@contextmanager
def jupyter_server(folder: Path, env: dict[str, str], *, timeout: float = 60) -> Iterator[Server]:
    """A server whose state lives in ``folder``, with ``env`` added to this environment."""
    import httpx

    port, token = free_port(), uuid.uuid4().hex
    full = {
        **os.environ,
        **env,
        "JUPYTER_BYOK_HOME": str(folder / "home"),
        "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),
        "JUPYTER_CONFIG_DIR": str(folder / "config"),
    }
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={folder}"],
        env=full, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = Server(proc, f"http://127.0.0.1:{port}/", token, {"Authorization": f"token {token}"})
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = server.url + "byok/status"
                if httpx.get(status, headers=server.headers, trust_env=False).is_success:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: see {folder / 'server.log'}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
