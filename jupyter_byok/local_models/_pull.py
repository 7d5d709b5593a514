"""``local pull``: download a GGUF model from the Hugging Face Hub (or a URL), verified.

Invariants:

- The Hub is spoken to through ``huggingface_hub`` (``HfApi.model_info`` for the file list
  with LFS sizes and SHA-256, ``get_hf_file_metadata`` for the file's location, and its
  HTTP session, ``http_stream_backoff`` and ``hf_raise_for_status`` for every answer that
  is not a 2xx body), so ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, proxies and the Hub's errors
  behave as everywhere else. A 2xx body is read by :mod:`._body` with ``http.client``
  (one copy of each byte, where httpx/h11 make three: most of a pull's time), with the
  same TLS trust and proxies; resuming, hashing and cancelling stay ours.
- The Hub token is the keystore's generic secret ``huggingface``, never a file: without one,
  ``token=False`` stops huggingface_hub from reading its own token file. It is sent to the
  Hub only (never to a URL pull, nor to a CDN the Hub redirects to), and never appears in a
  message, a log line, a progress report or the registry.
- A download goes to ``FILE.part`` beside its destination and survives an interruption
  (cancel, Ctrl-C, a lost connection): the next pull of the same file resumes with a
  ``Range`` request. The SHA-256 is computed while downloading, in a thread of its own (the
  bytes already on disk first), so verification costs no extra pass over the file.
- Nothing is registered until the file is complete, verified and its GGUF header read; a
  checksum mismatch, a non-GGUF file or a damaged header deletes what was downloaded.
- Free disk space is checked before downloading, from the size the Hub reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import LocalModelError
from ._spec import PullSpec, check_name, check_sha256, human_size, model_name_for, parse_spec

__all__ = [
    "HUB_SECRET",
    "MODELS_DIR_ENV",
    "Progress",
    "PullCancelled",
    "PullResult",
    "models_dir",
    "pull",
]

log = logging.getLogger("jupyter_byok")

#: The keystore entry (``jupyter byok keys set secret --name huggingface``) for gated repos.
HUB_SECRET = "huggingface"
MODELS_DIR_ENV = "JUPYTER_BYOK_MODELS_DIR"
#: Space kept free beyond the file itself (the registry, the Hub cache's refs, logs).
DISK_MARGIN = 16 * 1024**2
_GGUF_MAGIC = b"GGUF"
_PROGRESS_INTERVAL_S = 0.1
_TOKEN_HINT = "store a token with `jupyter byok keys set secret --name huggingface`"


class PullCancelled(LocalModelError):
    """The pull was cancelled; the partial file is kept and the next pull resumes it."""


@dataclasses.dataclass
class Progress:
    """Where a download is: for a terminal bar, a notebook bar or the panel."""

    filename: str
    total_bytes: int
    done_bytes: int = 0
    resumed_from: int = 0
    speed_bps: float = 0.0
    eta_s: float | None = None
    phase: str = "download"  # download | verify | done

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PullResult:
    name: str
    path: str
    status: str  # pulled | present
    source: str
    sha256: str
    size_bytes: int
    downloaded_bytes: int
    resumed_from: int
    seconds: float
    facts: dict[str, Any]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def models_dir() -> Path:
    """Where pulled models go: ``JUPYTER_BYOK_MODELS_DIR``, else ``models/`` in the home."""
    from ..config import byok_home

    env = os.environ.get(MODELS_DIR_ENV)
    path = Path(env).expanduser() if env else byok_home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _free_space(path: Path) -> int:
    return shutil.disk_usage(path).free


def _size(nbytes: float) -> str:
    return human_size(int(nbytes))


# --------------------------------------------------------------------------- the Hub
def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return value in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def _hub_token() -> tuple[Any, str | None]:
    """(the keystore's ``huggingface`` secret or None, why it could not be read)."""
    from ..keys import named_secret

    return named_secret(HUB_SECRET)


def _hub_error(exc: BaseException, spec: PullSpec, has_token: bool, why: str | None) -> Exception:
    """One line naming the repository and what to do, for each way the Hub says no."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo = spec.repo
    keystore = f" (the keystore could not be read: {why})" if why else ""
    if isinstance(exc, GatedRepoError):
        if has_token:
            return LocalModelError(
                f"{repo} is gated and the stored Hub token has no access to it: accept the "
                f"model's terms on its Hub page with the account of that token, then pull again"
            )
        return LocalModelError(
            f"{repo} is a gated repository and no Hub token is stored{keystore}: accept its "
            f"terms on its Hub page, then {_TOKEN_HINT}"
        )
    if isinstance(exc, RevisionNotFoundError):
        return LocalModelError(
            f"{repo} has no revision {spec.revision!r}: use a branch, tag or commit of the repo"
        )
    if isinstance(exc, RemoteEntryNotFoundError):
        return LocalModelError(
            f"{repo} has no file {spec.filename!r}: run `jupyter byok local pull hf:{repo}` "
            "to list its GGUF files"
        )
    if isinstance(exc, RepositoryNotFoundError):
        hint = "check the name" + (
            "" if has_token else f"; if it is private or gated, {_TOKEN_HINT}"
        )
        return LocalModelError(f"repository {repo} was not found on {_endpoint()}: {hint}")
    if isinstance(exc, OfflineModeIsEnabled):
        return LocalModelError(
            f"HF_HUB_OFFLINE is set and {spec.label} is not downloaded yet: unset it to pull"
        )
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        if status in (401, 403):
            if has_token:
                return LocalModelError(
                    f"the Hub refused the stored token for {repo} (HTTP {status}): check that "
                    f"it is valid and has access, then {_TOKEN_HINT} again"
                )
            return LocalModelError(
                f"{repo} needs a Hub token (HTTP {status}){keystore}: {_TOKEN_HINT}"
            )
        return LocalModelError(
            f"the Hub answered HTTP {status} for {spec.label}: try again later, or check "
            "HF_ENDPOINT and your proxy settings"
        )
    return LocalModelError(
        f"cannot reach {_endpoint()} for {spec.label} ({type(exc).__name__}): check the "
        "network, HF_ENDPOINT and HTTPS_PROXY, or set HF_HUB_OFFLINE=1 to use what is downloaded"
    )


@dataclasses.dataclass
class _Remote:
    """One file to fetch: where from, how big, what checksum, what to call it."""

    source: str  # hf | url
    url: str
    filename: str
    size: int | None
    sha256: str | None
    repo: str | None = None
    revision: str | None = None
    commit: str | None = None
    send_token: bool = False


def _choose_file(spec: PullSpec, siblings: list[Any], quant: str | None) -> Any:
    ggufs = [s for s in siblings if s.rfilename.lower().endswith(".gguf")]
    if spec.filename:
        for sibling in siblings:
            if sibling.rfilename == spec.filename:
                return sibling
        listed = ", ".join(s.rfilename for s in ggufs[:12]) or "none"
        raise LocalModelError(
            f"{spec.repo} has no file {spec.filename!r} (its GGUF files: {listed})"
        )
    if not ggufs:
        raise LocalModelError(
            f"{spec.repo} has no GGUF file: look for a repository with GGUF in its name"
        )
    candidates = ggufs
    if quant:
        wanted = quant.strip().lower()
        candidates = [s for s in ggufs if wanted in s.rfilename.lower()]
        if not candidates:
            raise LocalModelError(
                f"{spec.repo} has no GGUF file with {quant!r} in its name; its files: "
                + _listing(ggufs)
            )
    if len(candidates) == 1:
        return candidates[0]
    raise LocalModelError(
        f"{spec.repo} has {len(candidates)} GGUF files: choose one with --quant (e.g. "
        f"Q4_K_M) or name it as hf:{spec.repo}/FILE.gguf: " + _listing(candidates)
    )


def _listing(siblings: list[Any]) -> str:
    shown = [f"{s.rfilename} ({_size(s.size)})" if s.size else s.rfilename for s in siblings[:20]]
    more = f" and {len(siblings) - 20} more" if len(siblings) > 20 else ""
    return ", ".join(shown) + more


def _resolve_hf(spec: PullSpec, quant: str | None, token: Any, why: str | None) -> _Remote:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=_endpoint(), token=token.reveal() if token is not None else False)
    try:
        info = api.model_info(spec.repo or "", revision=spec.revision, files_metadata=True)
    except Exception as exc:
        raise _hub_error(exc, spec, token is not None, why) from None
    sibling = _choose_file(spec, list(info.siblings or []), quant)
    if "-of-" in sibling.rfilename and sibling.rfilename.lower().endswith(".gguf"):
        import re

        if re.search(r"-\d{5}-of-\d{5}\.gguf$", sibling.rfilename):
            raise LocalModelError(
                f"{sibling.rfilename} is one part of a split GGUF model, which is not supported "
                "yet: choose a single-file quantization"
            )
    lfs = sibling.lfs
    from huggingface_hub import hf_hub_url

    commit = info.sha
    return _Remote(
        source="hf",
        url=hf_hub_url(
            spec.repo or "",
            sibling.rfilename,
            revision=commit or spec.revision,
            endpoint=_endpoint(),
        ),
        filename=sibling.rfilename,
        size=(lfs.size if lfs else sibling.size),
        sha256=(lfs.sha256 if lfs else None),
        repo=spec.repo,
        revision=spec.revision or "main",
        commit=commit,
        send_token=token is not None,
    )


# --------------------------------------------------------------------------- download
class _Hasher:
    """SHA-256 of a file as it is written, on a thread of its own (hashlib releases the
    GIL), so hashing overlaps the download instead of following it."""

    def __init__(self, part: Path, already: int) -> None:
        self._queue: queue.Queue[bytes | memoryview | int | None] = queue.Queue(maxsize=8)
        self._digest = hashlib.sha256()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(part, already), name="byok-pull-hash", daemon=True
        )
        self._thread.start()

    def _run(self, part: Path, already: int) -> None:
        try:
            if already:
                with part.open("rb") as fh:  # the bytes from an earlier, interrupted pull
                    left = already
                    while left:
                        block = fh.read(min(left, 8 * 1024**2))
                        if not block:
                            break
                        self._digest.update(block)
                        left -= len(block)
            while True:
                item = self._queue.get()
                if item is None:
                    return
                if isinstance(item, int):  # the server ignored the Range: start again
                    self._digest = hashlib.sha256()
                    continue
                self._digest.update(item)
        except BaseException as exc:  # reported by hexdigest()
            self._error = exc

    def feed(self, chunk: bytes | memoryview) -> None:
        self._queue.put(chunk)

    def restart(self) -> None:
        self._queue.put(0)

    def hexdigest(self) -> str:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise LocalModelError(f"could not hash the download ({self._error})")
        return self._digest.hexdigest()

    def abandon(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)


class _NotGGUF(LocalModelError):
    pass


class _Writer:
    """Writes to the ``.part`` file: appends, feeds the hasher, and checks
    the GGUF magic as soon as the first bytes arrive (a web page or a safetensors file
    served under a .gguf name is refused after its first chunk, not after all of it)."""

    def __init__(self, fh: Any, hasher: _Hasher, filename: str, already: int) -> None:
        self.fh = fh
        self.hasher = hasher
        self.filename = filename
        self.head = b""
        self.checked = already >= 8
        self.written = 0

    def write(self, chunk: bytes | memoryview) -> int:
        if not self.checked:
            self.head += bytes(chunk[: 8 - len(self.head)])
            if len(self.head) >= 4 and self.head[:4] != _GGUF_MAGIC:
                raise _NotGGUF(
                    f"{self.filename} is not a GGUF file (it starts with {self.head[:4]!r}): "
                    "nothing was kept; pull a .gguf model file"
                )
            self.checked = len(self.head) >= 8
        self.fh.write(chunk)
        self.hasher.feed(chunk)
        self.written += len(chunk)
        return len(chunk)

    def truncate(self, size: int) -> None:
        self.fh.truncate(size)
        self.hasher.restart()
        self.head, self.checked = b"", False


def _bar_class(
    progress: Progress,
    on_progress: Callable[[Progress], None] | None,
    cancel: threading.Event,
    show: bool,
) -> type:
    """A tqdm class for the download: a visible bar (``tqdm.auto``: terminal or notebook
    widget) or a silent one; either way it reports progress and stops on cancel."""
    import tqdm as tqdm_module
    from tqdm.auto import tqdm as auto_tqdm

    base: type = auto_tqdm if show else tqdm_module.tqdm
    started = time.monotonic()
    last = [0.0]

    class _Bar(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("unit", "B")
            kwargs.setdefault("unit_scale", True)
            kwargs.setdefault("unit_divisor", 1024)
            kwargs["desc"] = progress.filename[-40:]
            if not show:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if cancel.is_set():
                raise PullCancelled(
                    f"pull of {progress.filename} cancelled at {_size(progress.done_bytes)}: "
                    "pull again to resume"
                )
            progress.done_bytes += int(n or 0)
            now = time.monotonic()
            fetched = progress.done_bytes - progress.resumed_from
            elapsed = max(now - started, 1e-6)
            progress.speed_bps = fetched / elapsed
            if progress.speed_bps > 0 and progress.total_bytes:
                progress.eta_s = (progress.total_bytes - progress.done_bytes) / progress.speed_bps
            if on_progress is not None and (
                now - last[0] >= _PROGRESS_INTERVAL_S or progress.done_bytes >= progress.total_bytes
            ):
                last[0] = now
                on_progress(progress)
            return super().update(n)

    return _Bar


def _download(
    remote: _Remote,
    part: Path,
    token: Any,
    progress: Progress,
    on_progress: Callable[[Progress], None] | None,
    cancel: threading.Event,
    show: bool,
) -> str:
    """Fetch ``remote`` into ``part`` (resuming what is there); its SHA-256."""
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.utils import build_hf_headers

    from .._version import __version__

    secret = token.reveal() if (token is not None and remote.send_token) else False
    headers = build_hf_headers(
        token=secret, library_name="jupyter_byok", library_version=__version__
    )
    url = remote.url
    if remote.source == "hf":
        # The Hub answers a resolve URL with the file's metadata and (for LFS files) a
        # redirect to its storage: follow it, without the token if it leaves the Hub.
        meta = get_hf_file_metadata(url, token=secret, headers=headers, endpoint=_endpoint())
        if meta.location and meta.location != url:
            if urlparse(meta.location).netloc != urlparse(url).netloc:
                headers.pop("authorization", None)
                headers.pop("Authorization", None)
            url = meta.location
    else:
        headers.pop("authorization", None)
        headers.pop("Authorization", None)
    already = part.stat().st_size if part.exists() else 0
    total = remote.size
    if total is not None and already > total:
        part.unlink()
        already = 0
    progress.resumed_from = progress.done_bytes = already
    hasher = _Hasher(part, already)
    finished = False
    try:
        if total is None or already < total:
            bar = _bar_class(progress, on_progress, cancel, show)(
                total=total, initial=already, desc=progress.filename
            )
            try:
                with part.open("ab") as fh:
                    writer = _Writer(fh, hasher, remote.filename, already)
                    _fetch(url, headers, writer, already, total, bar)
            finally:
                bar.close()
        progress.phase = "verify"
        if on_progress is not None:
            on_progress(progress)
        digest = hasher.hexdigest()
        finished = True
        return digest
    finally:
        if not finished:
            hasher.abandon()


#: bytes gathered before one write and one hash update (fewer, larger system calls)
_BLOCK = 4 * 1024**2
_RETRIES = 5


def _fetch(
    url: str, headers: dict[str, str], writer: _Writer, already: int, total: int | None, bar: Any
) -> None:
    """GET ``url`` from byte ``already`` on, writing as it arrives: a 2xx body is read with
    ``http.client`` (:mod:`._body`), anything else through huggingface_hub's HTTP session
    (its status errors and back-off). A dropped connection is resumed from what was
    written, up to ``_RETRIES`` times in a row, as huggingface_hub's own downloads do."""
    import importlib

    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    from ._body import BodyBroken, open_body

    # The HTTP library huggingface_hub is built on (httpx2 today, httpx before): its
    # transient errors are the ones a dropped connection raises.
    http = importlib.import_module(type(get_session()).__module__.split(".")[0])
    transient = (http.ConnectError, http.TimeoutException, http.RemoteProtocolError)

    retries = _RETRIES
    while True:
        request = dict(headers)
        if already:
            request["Range"] = f"bytes={already}-"
        pending: list[bytes] = []
        try:
            # A 2xx body is read with http.client (one copy: see _body); anything else
            # goes through huggingface_hub's session below, for its errors and back-off.
            body = open_body(url, request, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT, library=http)
            if body is not None:
                with body:
                    if already and body.status == 200:  # the Range was ignored: start again
                        writer.truncate(0)
                        bar.update(-already)
                        already = 0
                    for piece in body.chunks():
                        writer.write(piece)  # written first: a cancel keeps every byte read
                        already += len(piece)
                        retries = _RETRIES
                        bar.update(len(piece))  # raises PullCancelled when asked to stop
            else:
                already = _through_session(url, request, writer, already, bar, pending)
        except (PullCancelled, KeyboardInterrupt):
            if pending:  # keep what arrived: the next pull resumes from there
                writer.write(b"".join(pending))
            raise
        except (*transient, BodyBroken) as exc:
            if pending:  # keep what arrived before the connection dropped
                writer.write(b"".join(pending))
                already += sum(len(p) for p in pending)
            if retries <= 0:
                raise LocalModelError(
                    f"the download of {writer.filename} broke off {_RETRIES + 1} times in a "
                    f"row ({type(exc).__name__}); pull again to resume from byte {already}"
                ) from exc
            retries -= 1
            log.warning(
                "the download of %s was interrupted (%s); resuming at byte %d",
                writer.filename,
                type(exc).__name__,
                already,
            )
            time.sleep(1)
            continue
        if total is not None and already != total:
            raise LocalModelError(
                f"{writer.filename}: the server sent {already} bytes where the Hub announced "
                f"{total}: pull again"
            )
        return


def _through_session(
    url: str,
    request: dict[str, str],
    writer: _Writer,
    already: int,
    bar: Any,
    pending: list[bytes],
) -> int:
    """GET through huggingface_hub's session (its proxies, status errors and back-off),
    writing in ``_BLOCK``s; returns the bytes now in the file. What arrived but is not yet
    written is in ``pending`` if this raises (the caller keeps it)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import hf_raise_for_status, http_stream_backoff

    with http_stream_backoff(
        "GET",
        url,
        headers=request,
        timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
        retry_on_exceptions=(),
        retry_on_status_codes=(408, 429),
    ) as response:
        hf_raise_for_status(response)
        if already and response.status_code == 200:
            # The server ignored the Range: start the file again.
            writer.truncate(0)
            bar.update(-already)
            already = 0
        held = 0
        for chunk in response.iter_raw():
            bar.update(len(chunk))  # raises PullCancelled when asked to stop
            pending.append(chunk)
            held += len(chunk)
            if held >= _BLOCK:
                writer.write(b"".join(pending))
                already += held
                pending.clear()
                held = 0
        if pending:
            writer.write(b"".join(pending))
            already += held
            pending.clear()
    return already


# --------------------------------------------------------------------------- pull
def _present(remote: _Remote, name: str | None) -> tuple[str, dict[str, Any]] | None:
    """The registered entry for this very file (same source, same checksum), if its file is
    still there, complete and unchanged since it was verified."""
    from ..providers.local._registry import load_registry

    for entry_name, entry in load_registry()["models"].items():
        if not isinstance(entry, dict) or entry.get("sha256") != remote.sha256:
            continue
        if remote.sha256 is None or entry.get("filename") != remote.filename:
            continue
        if remote.source == "hf" and entry.get("repo") != remote.repo:
            continue
        path = Path(str(entry.get("path")))
        try:
            st = path.stat()
        except OSError:
            continue
        unchanged = st.st_size == entry.get("size_bytes") and st.st_mtime_ns == entry.get(
            "mtime_ns"
        )
        if unchanged and (name is None or name == entry_name):
            return entry_name, entry
    return None


def _check_name(name: str, remote: _Remote) -> None:
    from ..config import load_settings
    from ..providers.local._registry import load_registry

    check_name(name)
    if name in load_settings().local_models:
        raise LocalModelError(
            f"local:{name} is already a model added by hand: choose another --name, or "
            f"`jupyter byok local remove {name}` first"
        )
    entry = load_registry()["models"].get(name)
    if isinstance(entry, dict) and entry.get("sha256") != remote.sha256:
        raise LocalModelError(
            f"local:{name} is already another model ({entry.get('filename')}): choose "
            f"another --name, or `jupyter byok local remove {name}` first"
        )


def _destination(remote: _Remote) -> Path:
    """``MODELS/OWNER--REPO/FILE.gguf``; when a registered model with other content (an
    earlier revision) is there, ``MODELS/OWNER--REPO/SHA256[:12]/FILE.gguf``."""
    from ..providers.local._registry import load_registry

    base = models_dir()
    if remote.source == "hf" and remote.repo:
        folder = base / remote.repo.replace("/", "--")
    else:
        folder = base / "urls" / (remote.sha256 or "unknown")[:16]
    path = folder / remote.filename.rsplit("/", 1)[-1]
    taken = {
        str(e.get("path")): e.get("sha256")
        for e in load_registry()["models"].values()
        if isinstance(e, dict)
    }
    if str(path) in taken and taken[str(path)] != remote.sha256:
        path = folder / (remote.sha256 or "unknown")[:12] / path.name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def hub_cache_dir() -> Path:
    """huggingface_hub's cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else its default
    (read now: huggingface_hub reads these once, when imported)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _from_hub_cache(remote: _Remote) -> Path | None:
    """This very file in the Hugging Face cache (same commit, same SHA-256), if there."""
    if remote.source != "hf" or not remote.repo or not remote.commit:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        remote.repo, remote.filename, cache_dir=hub_cache_dir(), revision=remote.commit
    )
    if not isinstance(found, str):
        return None
    path = Path(found)
    try:
        if remote.size is not None and path.stat().st_size != remote.size:
            return None
        return path if _hash_file(path) == remote.sha256 else None
    except OSError:
        return None


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(8 * 1024**2):
            digest.update(block)
    return digest.hexdigest()


def _register(
    name: str,
    remote: _Remote,
    path: Path,
    digest: str,
    facts: dict[str, Any],
    downloaded: bool,
    n_gpu_layers: int | str | None,
) -> dict[str, Any]:
    from ..providers.local._registry import update_registry

    st = path.stat()
    entry: dict[str, Any] = {
        "path": str(path),
        "source": remote.source,
        "repo": remote.repo,
        "filename": remote.filename,
        "revision": remote.revision,
        "commit": remote.commit,
        "url": remote.url if remote.source == "url" else None,
        "sha256": digest,
        "size_bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "downloaded": downloaded,
        "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    def change(registry: dict[str, Any]) -> None:
        current = registry["models"].get(name)
        if isinstance(current, dict) and current.get("sha256") != digest:
            raise LocalModelError(f"local:{name} was registered meanwhile: choose another --name")
        registry["models"][name] = entry
        registry["facts"][str(path)] = {
            **facts,
            "size_bytes": st.st_size,
            "mtime_ns": st.st_mtime_ns,
        }
        if n_gpu_layers is not None:
            registry["options"].setdefault(str(path), {})["n_gpu_layers"] = n_gpu_layers

    update_registry(change)
    return entry


def pull(
    spec: str,
    *,
    name: str | None = None,
    quant: str | None = None,
    sha256: str | None = None,
    n_gpu_layers: int | str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    show_progress: bool = False,
    cancel: threading.Event | None = None,
    free_space: Callable[[Path], int] | None = None,
) -> PullResult:
    """Pull a GGUF model and register it as ``local:NAME``; see the module docstring.

    ``on_progress`` is called with a :class:`Progress` (about 10 times a second);
    ``show_progress`` shows a ``tqdm.auto`` bar (terminal or notebook); setting ``cancel``
    stops the download (:class:`PullCancelled`, the partial file is kept for resuming).
    ``free_space(directory) -> bytes`` is the disk-space seam (default: ``shutil.disk_usage``).
    """
    from ..providers.local._gpu import parse_gpu_layers

    started = time.monotonic()
    cancel = cancel or threading.Event()
    parsed = parse_spec(spec)
    expected = check_sha256(sha256)
    if n_gpu_layers is not None:
        n_gpu_layers = parse_gpu_layers(n_gpu_layers, "--gpu-layers")
    token: Any = None
    if parsed.kind == "url":
        if expected is None:
            raise LocalModelError(
                f"a URL pull needs the file's checksum: pass --sha256 (the publisher's "
                f"SHA-256 of {parsed.filename})"
            )
        remote = _Remote("url", str(parsed.url), str(parsed.filename), None, expected)
    else:
        if _offline():
            raise LocalModelError(
                f"HF_HUB_OFFLINE is set: cannot look up {parsed.label} on the Hub; unset it "
                "to pull (models already pulled keep working offline)"
            )
        token, why = _hub_token()
        remote = _resolve_hf(parsed, quant, token, why)
        if expected is not None and remote.sha256 is not None and expected != remote.sha256:
            raise LocalModelError(
                f"--sha256 does not match the Hub's checksum of {remote.filename} "
                f"({remote.sha256}): check the value you passed"
            )
        remote.sha256 = remote.sha256 or expected
    if remote.sha256 is None:
        raise LocalModelError(
            f"the Hub gives no SHA-256 for {remote.filename} (not an LFS file): pass --sha256"
        )
    if name is not None:
        _check_name(name, remote)

    found = _present(remote, name)
    if found is not None:
        entry_name, entry = found
        return PullResult(
            name=entry_name,
            path=str(entry["path"]),
            status="present",
            source=remote.source,
            sha256=str(entry["sha256"]),
            size_bytes=int(entry["size_bytes"]),
            downloaded_bytes=0,
            resumed_from=0,
            seconds=time.monotonic() - started,
            facts=_facts_of(Path(str(entry["path"]))),
            message=f"local:{entry_name} is already present and verified: nothing to do",
        )
    final_name = name or model_name_for(remote.filename)
    if name is None:
        _check_name(final_name, remote)

    dest = _destination(remote)
    with _pulling(dest):
        return _pull_file(
            remote,
            dest,
            final_name,
            parsed,
            token,
            n_gpu_layers,
            started,
            on_progress,
            show_progress,
            cancel,
            free_space,
        )


@contextlib.contextmanager
def _pulling(dest: Path) -> Iterator[None]:
    """One pull of a file at a time, across processes (the panel and a terminal)."""
    import fcntl

    from ..config import byok_home

    folder = byok_home() / "pull-locks"
    folder.mkdir(exist_ok=True)
    lock = folder / (hashlib.sha256(str(dest).encode()).hexdigest()[:24] + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LocalModelError(
                f"{dest.name} is being pulled by another process (a terminal or the panel): "
                "wait for it to finish, or cancel it there"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock; the lock file stays (see _files.file_lock)


def _pull_file(
    remote: _Remote,
    dest: Path,
    final_name: str,
    parsed: PullSpec,
    token: Any,
    n_gpu_layers: int | str | None,
    started: float,
    on_progress: Callable[[Progress], None] | None,
    show_progress: bool,
    cancel: threading.Event,
    free_space: Callable[[Path], int] | None,
) -> PullResult:
    """The download, verification and registration of ``remote`` at ``dest``."""
    from ._gguf import inspect_gguf

    part = dest.with_name(dest.name + ".part")
    stamp = part.with_name(part.name + ".json")
    identity = {"sha256": remote.sha256, "size": remote.size}
    # A .part of another file (the repo moved on, another --sha256) is not resumed.
    if part.exists():
        try:
            previous = json.loads(stamp.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous != identity:
            part.unlink()
    cached = _from_hub_cache(remote) if not part.exists() else None
    if cached is not None:
        # Already downloaded by another Hugging Face tool: verified, used where it is, and
        # never deleted by `local remove` (jupyter_byok did not download it).
        facts = inspect_gguf(cached)
        _register(final_name, remote, cached, str(remote.sha256), facts, False, n_gpu_layers)
        _discard(part, stamp)
        return PullResult(
            name=final_name,
            path=str(cached),
            status="present",
            source=remote.source,
            sha256=str(remote.sha256),
            size_bytes=cached.stat().st_size,
            downloaded_bytes=0,
            resumed_from=0,
            seconds=time.monotonic() - started,
            facts=facts,
            message=(
                f"local:{final_name}: {cached.name} was in the Hugging Face cache and "
                "verifies: registered without downloading"
            ),
        )
    if dest.exists() and not part.exists():
        # A complete file from an earlier pull whose registration was removed: verify it.
        if _hash_file(dest) == remote.sha256:
            facts = inspect_gguf(dest)
            _register(final_name, remote, dest, remote.sha256, facts, True, n_gpu_layers)
            return PullResult(
                name=final_name,
                path=str(dest),
                status="present",
                source=remote.source,
                sha256=remote.sha256,
                size_bytes=dest.stat().st_size,
                downloaded_bytes=0,
                resumed_from=0,
                seconds=time.monotonic() - started,
                facts=facts,
                message=f"local:{final_name}: {dest.name} was already downloaded and verifies",
            )
        dest.unlink()
    already = part.stat().st_size if part.exists() else 0
    if remote.size is not None:
        needed = remote.size - already + DISK_MARGIN
        free = (free_space or _free_space)(dest.parent)
        if free < needed:
            raise LocalModelError(
                f"not enough disk space for {remote.filename}: it needs {_size(needed)} "
                f"({_size(remote.size)} file) and {dest.parent} has {_size(free)} free: free "
                f"some space, or set {MODELS_DIR_ENV} to a folder on a larger disk"
            )
    stamp.write_text(json.dumps(identity), encoding="utf-8")
    progress = Progress(filename=remote.filename.rsplit("/", 1)[-1], total_bytes=remote.size or 0)
    try:
        try:
            digest = _download(remote, part, token, progress, on_progress, cancel, show_progress)
        except BaseException:
            if not part.exists() or part.stat().st_size == 0:  # nothing worth resuming
                _discard(part, stamp)
            raise
    except (PullCancelled, KeyboardInterrupt):
        raise
    except _NotGGUF:
        _discard(part, stamp)
        raise
    except Exception as exc:
        if isinstance(exc, LocalModelError):
            raise
        if remote.source == "hf":
            raise _hub_error(exc, parsed, token is not None, None) from None
        raise LocalModelError(
            f"could not download {remote.url} ({type(exc).__name__}): check the URL and the "
            "network, then pull again to resume"
        ) from None
    if digest != remote.sha256:
        _discard(part, stamp)
        raise LocalModelError(
            f"checksum mismatch for {remote.filename}: expected sha256 {remote.sha256}, got "
            f"{digest}; the download was deleted and nothing was registered: pull again (if it "
            "repeats, something between you and the server alters the file)"
        )
    try:
        facts = inspect_gguf(part)
    except LocalModelError as exc:
        _discard(part, stamp)
        raise LocalModelError(f"{remote.filename} was refused: {exc}") from None
    os.replace(part, dest)
    stamp.unlink(missing_ok=True)
    _register(final_name, remote, dest, digest, facts, True, n_gpu_layers)
    progress.phase = "done"
    if on_progress is not None:
        on_progress(progress)
    seconds = time.monotonic() - started
    fetched = progress.done_bytes - progress.resumed_from
    resumed = f", resumed from {_size(already)}" if already else ""
    return PullResult(
        name=final_name,
        path=str(dest),
        status="pulled",
        source=remote.source,
        sha256=digest,
        size_bytes=dest.stat().st_size,
        downloaded_bytes=fetched,
        resumed_from=already,
        seconds=seconds,
        facts=facts,
        message=(
            f"pulled local:{final_name} ({_size(dest.stat().st_size)}, sha256 verified{resumed}) "
            f"in {seconds:.1f} s"
        ),
    )


def _discard(part: Path, stamp: Path) -> None:
    part.unlink(missing_ok=True)
    stamp.unlink(missing_ok=True)
    try:
        part.parent.rmdir()  # the repo's folder, if nothing else is in it
    except OSError:
        pass


def _facts_of(path: Path) -> dict[str, Any]:
    from ..providers.local._registry import load_registry

    facts = load_registry()["facts"].get(str(path))
    return dict(facts) if isinstance(facts, dict) else {}
