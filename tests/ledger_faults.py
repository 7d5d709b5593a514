"""Real write failures for the ledger tests, injected at the OS boundary (no mocks of ours).

* :func:`tmpfs`: a real small file system (``mount -t tmpfs``), filled by :func:`fill` until
  the kernel answers ENOSPC: a real full disk.
* :func:`read_only_bind`: a folder bind-mounted read-only onto itself (``mount --bind`` then
  ``remount,bind,ro``): as root, a chmod'ed folder does not stop writes, a read-only mount does.
* ``RLIMIT_FSIZE`` (in the tests): the kernel refuses to grow a file past the limit (EFBIG;
  Python ignores SIGXFSZ), which SQLite reports as ``disk I/O error``: a real I/O error in
  the middle of a commit, which needs no mount rights and which ``statvfs`` cannot foresee.
* :class:`ServerProcess`: a real ``jupyter server`` process with jupyter_byok, for SIGKILL
  and for limits set from outside (``resource.prlimit``).

Mounts are always undone, even when a test fails.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        # still in use (a connection of this process): detach it now, freed when closed
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m") -> Iterator[bool]:
    """Mount a tmpfs of ``size`` on ``path``; yields whether mounting was permitted."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
    )
    mounted = done.returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            _umount(path)


@contextlib.contextmanager
def read_only_bind(path: Path) -> Iterator[bool]:
    """Make ``path`` a read-only bind mount of itself; yields whether that was permitted."""
    if subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode:
        yield False
        return
    try:
        ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True)
        yield ro.returncode == 0
    finally:
        _umount(path)


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until its file system is full (ENOSPC)."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    with open(filler, "ab", buffering=0) as f:  # and the last few bytes of the last block
        while True:
            try:
                f.write(b"\0")
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    return filler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def events(body: bytes) -> list[tuple[str, Any]]:
    out = []
    for block in body.decode().split("\n\n"):
        if block.strip():
            head, data = block.split("\n", 1)
            out.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


class ServerProcess:
    """A real ``jupyter server`` with jupyter_byok on loopback, in a process of its own."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.token = uuid.uuid4().hex
        self.env = {**os.environ, **env, "JUPYTER_RUNTIME_DIR": str(root / "runtime")}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._output: list[bytes] = []

    def start(self, timeout: float = 60.0) -> ServerProcess:
        for _ in range(3):  # a port taken between free_port() and the bind: another one
            self.port = free_port()
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
                    f"--port={self.port}", "--ServerApp.ip=127.0.0.1",
                    "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                    f"--ServerApp.root_dir={self.root}",
                ],
                env=self.env,
                stdout=subprocess.PIPE,  # a pipe: RLIMIT_FSIZE set on the server spares it
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    code, _ = self.request("GET", "/byok/status", timeout=2)
                except OSError:
                    time.sleep(0.05)  # not listening yet: nothing to wait on but the port
                    continue
                if code == 200:
                    return self
            self.kill()
        raise AssertionError(f"the Jupyter server did not start: {self.output()[-2000:]}")

    def _drain(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._output.append(line)

    def output(self) -> str:
        """What the server printed (its log) so far."""
        return b"".join(self._output).decode(errors="replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        conn: http.client.HTTPConnection | None = None,
        timeout: float = 30,
    ) -> tuple[int, bytes]:
        own = conn is None
        conn = conn or self.connection(timeout)
        try:
            conn.request(
                method,
                path,
                body=None if body is None else json.dumps(body),
                headers={"Authorization": f"token {self.token}"},
            )
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            if own:
                conn.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
