"""A loopback Hugging Face Hub for offline tests and demos of ``local pull``.

``with FakeHub() as hub:`` serves, on 127.0.0.1 and an ephemeral port, what
``huggingface_hub`` asks the Hub for when it downloads a file:

- ``GET /api/models/OWNER/REPO[/revision/REV]`` (``HfApi.model_info``): the commit and the
  file list; with ``?blobs=true`` each file's size and, for LFS files, its SHA-256;
- ``HEAD|GET /OWNER/REPO/resolve/REV/FILE``: ``X-Repo-Commit``, ``ETag`` and
  ``X-Linked-Etag`` (the LFS SHA-256), ``X-Linked-Size``, ``Content-Length``,
  ``Accept-Ranges: bytes``, and ``206 Partial Content`` with ``Content-Range`` for a
  ``Range: bytes=N-`` request (resume);
- the Hub's errors, with its ``X-Error-Code`` header: ``RepoNotFound``,
  ``EntryNotFound``, ``RevisionNotFound``, and ``GatedRepo`` (401 without a token, 403 with
  a wrong one) for a gated repository, served only with ``Authorization: Bearer TOKEN``;
- ``GET /files/NAME``: a plain file, for URL pulls.

Point ``HF_ENDPOINT`` at ``hub.url`` (``hub.env()``). Faults for tests: ``advertise`` a
wrong SHA-256, ``set_rate`` (bytes per second, to watch a progress bar), ``cut_after``
(the next download stops after N bytes, as a dropped connection). ``hub.transfers``
records each body sent (path, first byte, bytes sent) and ``hub.requests`` each request
(method, path, whether it carried an ``Authorization`` header); no header value is kept.

``python -m jupyter_byok.testing.hub`` serves the embedded SmolLM2 model as
``HuggingFaceTB/SmolLM2-135M-Instruct-GGUF`` until interrupted.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

__all__ = ["EMBEDDED_FILENAME", "EMBEDDED_REPO", "FakeHub", "HubFile", "Transfer"]

EMBEDDED_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
EMBEDDED_FILENAME = "smollm2-135m-instruct-q4_1.gguf"
_CHUNK = 1024 * 1024


@dataclass
class HubFile:
    path: Path | None
    data: bytes | None
    size: int
    sha256: str
    advertised: str | None = None  # a wrong checksum to announce (fault injection)
    lfs: bool = True

    @property
    def announced(self) -> str:
        return self.advertised or self.sha256

    def open(self) -> Any:
        import io

        return self.path.open("rb") if self.path is not None else io.BytesIO(self.data or b"")


@dataclass
class _Repo:
    repo_id: str
    commit: str
    gated: bool = False
    private: bool = False
    token: str | None = None
    files: dict[str, HubFile] = field(default_factory=dict)


@dataclass
class Transfer:
    """One response body: which file, from which byte, how many bytes were sent."""

    path: str
    start: int
    sent: int
    status: int


def _sha256(source: Path | bytes) -> str:
    digest = hashlib.sha256()
    if isinstance(source, bytes):
        digest.update(source)
    else:
        with source.open("rb") as fh:
            while block := fh.read(8 * _CHUNK):
                digest.update(block)
    return digest.hexdigest()


class FakeHub:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.repos: dict[str, _Repo] = {}
        self.urls: dict[str, HubFile] = {}
        self.transfers: list[Transfer] = []
        #: (method, path, whether an Authorization header came): never a header's value
        self.requests: list[tuple[str, str, bool]] = []
        self.rate: float | None = None
        self._cut: int | None = None
        self._lock = threading.Lock()
        #: bodies being sent now (``transfers`` gets their entries when they end)
        self._sending = 0
        self._idle = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- content
    def add_repo(
        self, repo_id: str, *, gated: bool = False, private: bool = False, token: str | None = None
    ) -> FakeHub:
        """A repository; ``gated``/``private`` ones serve files only to ``token``."""
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = _Repo(repo_id, commit, gated, private, token)
        return self

    def add_file(
        self,
        repo_id: str,
        filename: str,
        source: Path | bytes,
        *,
        advertise: str | None = None,
        lfs: bool = True,
    ) -> HubFile:
        """Serve ``source`` (a path, read when requested, or bytes) as ``repo_id/filename``;
        ``advertise``: the SHA-256 to announce instead of the real one."""
        if repo_id not in self.repos:
            self.add_repo(repo_id)
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        item = HubFile(
            path=None if isinstance(source, bytes) else Path(source),
            data=source if isinstance(source, bytes) else None,
            size=size,
            sha256=_sha256(source),
            advertised=advertise,
            lfs=lfs,
        )
        self.repos[repo_id].files[filename] = item
        return item

    def add_url(self, name: str, source: Path | bytes) -> str:
        """Serve ``source`` at ``/files/NAME``; its URL."""
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        self.urls[name] = HubFile(
            path=None if isinstance(source, bytes) else Path(source),
            data=source if isinstance(source, bytes) else None,
            size=size,
            sha256=_sha256(source),
        )
        return f"{self.url}/files/{name}"

    def set_rate(self, bytes_per_s: float | None) -> None:
        """Throttle downloads (None: as fast as the loopback goes)."""
        self.rate = bytes_per_s

    def cut_after(self, nbytes: int | None) -> None:
        """The next body stops after ``nbytes`` and the connection closes (once)."""
        self._cut = nbytes

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until no body is being sent: a client that stops reading early (a refused file)
        is done before the server's thread has noticed and recorded the transfer."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._sending == 0, timeout):
                raise TimeoutError(f"the fake Hub still sends {self._sending} body(ies)")

    def bytes_sent(self, filename: str | None = None) -> int:
        self.wait_idle()
        with self._lock:
            return sum(
                t.sent for t in self.transfers if filename is None or t.path.endswith(filename)
            )

    # ------------------------------------------------------------- server
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Hub is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        return {"HF_ENDPOINT": self.url}

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?/?$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeHub

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        self._route(body=True)

    # ------------------------------------------------------------- routing
    def _route(self, body: bool) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        self.fake.requests.append((self.command, path, "Authorization" in self.headers))
        info = _INFO.match(path)
        if info and body:
            return self._model_info(info["repo"], info["rev"], parse_qs(url.query))
        resolve = _RESOLVE.match(path)
        if resolve:
            return self._resolve(resolve["repo"], resolve["rev"], resolve["file"], body)
        if path.startswith("/files/") and path[7:] in self.fake.urls:
            return self._send_file(self.fake.urls[path[7:]], path, body, {})
        self._error(404, "NotFound", "no such route on the fake Hub")

    def _repo(self, repo_id: str, files: bool) -> _Repo | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        if repo.private or (repo.gated and files):
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                code = "GatedRepo" if repo.gated else "RepoNotFound"
                message = (
                    f"Access to model {repo_id} is restricted. You must have access to it "
                    "and be authenticated to access it. Please log in."
                )
                self._error(401, code, message)
                return None
            if auth.removeprefix("Bearer ") != repo.token:
                code = "GatedRepo" if repo.gated else "RepoNotFound"
                self._error(403, code, f"Access to model {repo_id} is restricted.")
                return None
        return repo

    def _model_info(self, repo_id: str, rev: str | None, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id, files=False)
        if repo is None:
            return
        if rev not in (None, "main", repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for name, item in sorted(repo.files.items()):
            sibling: dict[str, Any] = {"rfilename": name}
            if blobs:
                sibling["size"] = item.size
                sibling["blobId"] = hashlib.sha1(item.announced.encode()).hexdigest()
                if item.lfs:
                    sibling["lfs"] = {
                        "sha256": item.announced,
                        "size": item.size,
                        "pointerSize": 134,
                    }
            siblings.append(sibling)
        data = {
            "_id": repo.commit[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": repo.commit,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": ["gguf"],
            "library_name": "gguf",
            "siblings": siblings,
            "lastModified": "2026-01-01T00:00:00.000Z",
        }
        raw = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _resolve(self, repo_id: str, rev: str, filename: str, body: bool) -> None:
        repo = self._repo(repo_id, files=True)
        if repo is None:
            return
        if rev not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        item = repo.files.get(filename)
        if item is None:
            return self._error(
                404, "EntryNotFound", f"{filename} does not exist", {"X-Repo-Commit": repo.commit}
            )
        etag = f'"{item.announced}"'
        headers = {
            "X-Repo-Commit": repo.commit,
            "ETag": etag,
            "Content-Disposition": f'attachment; filename="{filename.rsplit("/", 1)[-1]}"',
        }
        if item.lfs:
            headers["X-Linked-Etag"] = etag
            headers["X-Linked-Size"] = str(item.size)
        self._send_file(item, f"/{repo_id}/{filename}", body, headers)

    # ------------------------------------------------------------- bodies
    def _send_file(self, item: HubFile, label: str, body: bool, headers: dict[str, str]) -> None:
        start, end = 0, item.size - 1
        status = 200
        wanted = self.headers.get("Range")
        if wanted:
            match = _RANGE.match(wanted.strip())
            if match is None or int(match[1]) >= item.size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{item.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(match[1])
            end = min(int(match[2]), item.size - 1) if match[2] else item.size - 1
            status = 206
        length = end - start + 1
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{item.size}")
        self.end_headers()
        if not body:
            return
        fake = self.fake
        cut, fake._cut = fake._cut, None
        limit = length if cut is None else min(length, cut)
        sent = 0
        with fake._lock:
            fake._sending += 1
        try:
            with item.open() as fh:
                fh.seek(start)
                if fake.rate is None and cut is None and item.path is not None:
                    sent = self.connection.sendfile(fh, start, length)
                else:
                    began = time.monotonic()
                    while sent < limit:
                        block = fh.read(
                            min(_CHUNK if fake.rate is None else 64 * 1024, limit - sent)
                        )
                        if not block:
                            break
                        self.wfile.write(block)
                        sent += len(block)
                        if fake.rate:
                            ahead = sent / fake.rate - (time.monotonic() - began)
                            if ahead > 0:
                                time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with fake._idle:
                fake.transfers.append(Transfer(label, start, sent, status))
                fake._sending -= 1
                fake._idle.notify_all()
        if sent < length:
            self.close_connection = True

    def _error(
        self, status: int, code: str, message: str, extra: dict[str, str] | None = None
    ) -> None:
        raw = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)


def serve_embedded(hub: FakeHub) -> FakeHub:
    """Serve the embedded SmolLM2 file as ``EMBEDDED_REPO/EMBEDDED_FILENAME``."""
    from ..providers.local import embedded_model_path

    hub.add_file(EMBEDDED_REPO, EMBEDDED_FILENAME, embedded_model_path())
    return hub


def main() -> None:
    hub = serve_embedded(FakeHub()).start()
    print(f"export HF_ENDPOINT={hub.url}", flush=True)
    print(f"# then: jupyter byok local pull hf:{EMBEDDED_REPO}/{EMBEDDED_FILENAME}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
