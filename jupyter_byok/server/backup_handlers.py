"""The panel's "Back up…" and "Restore…": ``POST /byok/backup`` answers with the backup
file; ``POST /byok/restore/upload`` takes one (streamed to a private file), then ``POST
/byok/restore`` opens it with the passphrase and merges it.

Each is authenticated and authorized against ``jupyter_byok:backup`` (a backup holds every
key, sealed; a restore changes keys, budgets and settings). The passphrase travels only in
a POST body. An upload is written to disk only after the request is authenticated and
authorized, and only up to :data:`MAX_UPLOAD` bytes.

Registered in :data:`.handlers.ROUTES` (imported from there, after ``ByokHandler``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from tornado import web

from .. import errors
from ._replies import UploadReply
from .handlers import ByokHandler, error_body

BACKUP_RESOURCE = "jupyter_byok:backup"
#: the largest backup the panel takes (the CLI has no limit)
MAX_UPLOAD = 4 << 30
#: uploads not restored within this many seconds are removed
UPLOAD_TTL_S = 3600
UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def _uploads() -> Path:
    from .._files import ensure_private_dir
    from ..config import byok_home

    return ensure_private_dir(byok_home() / "uploads")


def _sweep(folder: Path) -> None:
    """Remove uploads older than UPLOAD_TTL_S."""
    limit = time.time() - UPLOAD_TTL_S
    for p in folder.glob("*.byokbak"):
        with contextlib.suppress(OSError):
            if p.stat().st_mtime < limit:
                p.unlink()


class _BackupBase(ByokHandler):
    auth_resource = BACKUP_RESOURCE

    def fail(self, exc: BaseException) -> None:
        from ..backup import BackupError, BackupSpaceError

        if isinstance(exc, BackupSpaceError):
            self.reply(error_body(exc, 507), 507)
        elif isinstance(exc, BackupError):
            self.reply(error_body(exc, 400), 400)
        else:
            super().fail(exc)

    def _passphrase(self, body: dict[str, Any]) -> str:
        from .service import BadInput

        value = body.get("passphrase")
        if not isinstance(value, str) or not value.strip():
            raise BadInput("a backup passphrase is needed (a non-empty string 'passphrase')")
        if len(value) > 1024:
            raise BadInput("the passphrase is longer than 1024 characters")
        return value


class BackupHandler(_BackupBase):
    """``POST /byok/backup`` ``{"passphrase": ..., "with_models": false}``: the file."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        from ..backup import create_backup, passphrase_warning
        from ..config import byok_home
        from .service import BadInput

        try:
            body = self.body()
            passphrase = self._passphrase(body)
            with_models = body.get("with_models", False)
            if not isinstance(with_models, bool):
                raise BadInput("'with_models' must be true or false")
        except (errors.ByokError, BadInput) as exc:
            self.fail(exc)
            return
        work = Path(tempfile.mkdtemp(prefix=".backup-out-", dir=byok_home()))
        try:
            out = work / "backup.byokbak"
            try:
                manifest = await asyncio.to_thread(
                    create_backup,
                    out,
                    passphrase,
                    with_models=with_models,
                    keystore=self.service.keystore,
                )
            except errors.ByokError as exc:
                self.fail(exc)
                return
            host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "jupyter"
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M")
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header(
                "Content-Disposition", f'attachment; filename="byok-{host}-{stamp}.byokbak"'
            )
            self.set_header("Content-Length", str(out.stat().st_size))
            counts = manifest["counts"]
            self.set_header(
                "X-Byok-Backup",
                f"keys={counts['keys']}; ledger_rows={counts['ledger_rows']}; "
                f"budgets={counts['budgets']}",
            )
            warning = passphrase_warning(passphrase)
            if warning:
                self.set_header("X-Byok-Warning", warning)
            with open(out, "rb") as f:
                while chunk := f.read(1 << 20):
                    self.write(chunk)
                    await self.flush()
            await self.finish()
        finally:
            shutil.rmtree(work, ignore_errors=True)


@web.stream_request_body
class RestoreUploadHandler(_BackupBase):
    """``POST /byok/restore/upload`` with the file as the raw body: ``{"upload": id}``."""

    _file: IO[bytes] | None = None
    _path: Path | None = None
    _size = 0
    _over = False

    def body_refused(self) -> bool:
        from .service import TooLarge

        if self._finished:
            return True
        declared = self.request.headers.get("Content-Length", "")
        size = int(declared) if declared.strip().isdigit() else -1
        if size > MAX_UPLOAD:
            self.fail(
                TooLarge(
                    f"the backup is too large for the panel ({size:,} bytes; limit "
                    f"{MAX_UPLOAD:,}): restore it with `jupyter byok restore FILE`"
                )
            )
            return True
        self.request.connection.set_max_body_size(MAX_UPLOAD)  # type: ignore[union-attr]
        return False

    async def prepare(self) -> None:  # type: ignore[override]  # as APIHandler.prepare
        await super().prepare()
        if self._finished or self.request.method != "POST":
            return
        # Nothing goes to disk for a request that may not restore.
        user = self.current_user
        allowed = user is not None and await ensure_async(
            self.authorizer.is_authorized(self, user, "write", BACKUP_RESOURCE)
        )
        if not allowed:
            return  # the decorators on post() answer 403 (or redirect)
        folder = _uploads()
        _sweep(folder)
        self._path = folder / f"{secrets.token_hex(16)}.byokbak"
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "wb")

    def data_received(self, chunk: bytes) -> None:
        if self._file is None or self._over:
            return
        self._size += len(chunk)
        if self._size > MAX_UPLOAD:
            self._over = True
            return
        self._file.write(chunk)

    def on_finish(self) -> None:
        self._close(keep=self._kept)

    def on_connection_close(self) -> None:
        self._close(keep=False)
        super().on_connection_close()

    _kept = False

    def _close(self, keep: bool) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if not keep and self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()

    @web.authenticated
    @authorized
    async def post(self) -> None:
        from .service import BadInput, TooLarge

        if self._file is None or self._path is None:
            self.fail(BadInput("the upload could not be stored"))
            return
        if self._over:
            self.fail(TooLarge(f"the backup is larger than {MAX_UPLOAD:,} bytes"))
            return
        self._file.close()
        self._file = None
        if self._size == 0:
            self.fail(BadInput("the upload is empty: choose a backup file"))
            return
        self._kept = True
        uploaded: UploadReply = {"upload": self._path.stem, "bytes": self._size}
        self.reply(uploaded, 201)


class RestoreHandler(_BackupBase):
    """``POST /byok/restore`` ``{"upload": id, "passphrase": ..., "replace": false}``:
    the counts. A wrong passphrase keeps the upload for another try; anything else
    removes it."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        from ..backup import BackupPassphraseError, restore_backup
        from .service import BadInput, NotFound

        try:
            body = self.body()
            passphrase = self._passphrase(body)
            upload = body.get("upload")
            replace = body.get("replace", False)
            if not isinstance(upload, str) or not UPLOAD_ID.match(upload):
                raise BadInput("'upload' must be the id POST /byok/restore/upload answered")
            if not isinstance(replace, bool):
                raise BadInput("'replace' must be true or false")
            path = _uploads() / f"{upload}.byokbak"
            if not path.is_file():
                raise NotFound("no such upload (uploads are kept for an hour): upload it again")
        except (errors.ByokError, BadInput, NotFound) as exc:
            self.fail(exc)
            return
        try:
            report = await asyncio.to_thread(
                restore_backup, path, passphrase, replace=replace, keystore=self.service.keystore
            )
        except errors.ByokError as exc:
            if not isinstance(exc, BackupPassphraseError):  # another try needs the file
                path.unlink(missing_ok=True)
            self.fail(_renamed(exc, str(path)))
            return
        path.unlink(missing_ok=True)
        self.reply(report)


def _renamed(exc: errors.ByokError, path: str) -> BaseException:
    """The error with the upload's private path replaced by "the backup"."""
    try:
        return type(exc)(str(exc).replace(path, "the backup"))
    except TypeError:
        return exc
