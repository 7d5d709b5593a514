"""``jupyter byok backup``: collect keys, the ledger, settings and (optionally) model files
into one sealed file (see :mod:`._format`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import socket
import sqlite3
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._format import (
    CHUNK,
    DEFAULT_KDF,
    BackupError,
    BackupSpaceError,
    KdfParams,
    Writer,
    private_output,
)

#: the settings files a backup carries, by section id (all hold names, URLs and numbers,
#: never a key value)
SETTINGS_FILES = {
    "settings": "config.json",
    "budgets": "budgets.json",
    "prices": "prices.json",
    "local_registry": "local-models.json",
}
#: the settings files restored whole (the others merge item by item)
WHOLE_FILES = {"prices": "prices.json", "local_registry": "local-models.json"}
#: bytes kept free beyond what a backup or restore needs
MARGIN = 16 << 20


def free_bytes(path: Path) -> int:
    """Free bytes for an unprivileged user on ``path``'s file system."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


FreeBytes = Callable[[Path], int]


def _need_space(where: Path, need: int, what: str, free: FreeBytes) -> None:
    have = free(where)
    if have < need + MARGIN:
        raise BackupSpaceError(
            f"not enough disk space for {what} in {where}: {_mib(need + MARGIN)} needed, "
            f"{_mib(have)} free; nothing was written: free some space or choose another place"
        )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


_COMMON = ("password", "passwort", "qwerty", "123456", "letmein", "admin", "jupyter", "secret")


def passphrase_warning(passphrase: str) -> str | None:
    """A one-line warning for a passphrase that offline guessing could find, or None."""
    text = passphrase.strip()
    classes = sum(
        any(test(c) for c in text)
        for test in (str.islower, str.isupper, str.isdigit, lambda c: not c.isalnum())
    )
    bits = len(text) * math.log2({1: 26, 2: 52, 3: 62}.get(classes, 94))
    common = any(word in text.lower() for word in _COMMON)
    if len(text) < 12 or len(set(text)) < 8 or bits < 64 or common:
        return (
            "this passphrase is weak: anyone who gets the backup file can try guesses "
            "offline; use 4 or more random words, or 16 or more random characters"
        )
    return None


def _file_chunks(path: Path, compress: bool) -> Iterator[bytes]:
    z = zlib.compressobj(3) if compress else None
    with open(path, "rb") as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            if z is None:
                yield block
            else:
                out = z.compress(block)
                if out:
                    yield out
    if z is not None:
        tail = z.flush()
        # zlib output can exceed a chunk only by a few bytes; keep records at most CHUNK+1 KiB
        for i in range(0, len(tail), CHUNK):
            yield tail[i : i + CHUNK]


def _digest_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def snapshot_ledger(source: Path, dest: Path) -> dict[str, Any]:
    """A consistent copy of the ledger at ``source`` in ``dest`` (SQLite's online backup
    API, in one step: one read transaction, so every row committed before it started is
    in, and writers go on meanwhile); its row count, cost and integrity are checked."""
    from ..ledger.writer import flush_all

    flush_all()  # rows this process has acknowledged are committed first
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(str(dest))
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")
            ok = dst.execute("PRAGMA integrity_check").fetchone()[0]
            if ok != "ok":
                raise BackupError(
                    f"the usage ledger {source} fails its integrity check ({ok}); nothing was "
                    "written: run `jupyter byok doctor`"
                )
            rows, cost = dst.execute(
                "SELECT count(*), ifnull(sum(cost_pico), 0) FROM attempts"
            ).fetchone()
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot snapshot the usage ledger {source} ({exc})") from None
    finally:
        src.close()
    os.chmod(dest, 0o600)
    return {"rows": int(rows), "cost_pico": int(cost)}


def create_backup(
    dest: str | os.PathLike[str],
    passphrase: str,
    *,
    with_models: bool = False,
    keystore: Any = None,
    kdf: KdfParams = DEFAULT_KDF,
    label: str | None = None,
    force: bool = False,
    free: FreeBytes = free_bytes,
) -> dict[str, Any]:
    """Write a backup of this JUPYTER_BYOK_HOME to ``dest`` (0600); returns the manifest
    (counts, sections, never a key value). Checks everything it reads, and the space it
    needs, before the file appears; on any failure no file is left behind."""
    from .._files import ensure_private_dir
    from .._version import __version__
    from ..config import byok_home, load_settings
    from ..keys import Keystore
    from ..ledger import ledger_path

    if not passphrase or not passphrase.strip():
        raise BackupError("the backup passphrase is empty")
    out = Path(dest).expanduser().absolute()
    if not out.parent.is_dir():
        raise BackupError(f"the folder {out.parent} does not exist")
    if out.exists() and not force:
        raise BackupError(f"{out} already exists: choose another name, or pass --force")
    home = byok_home()
    store = keystore if keystore is not None else Keystore()
    entries = store.export_entries()  # raises (one line) if the store cannot be opened
    settings = load_settings(home, fresh=True)  # a broken settings file fails here
    files: dict[str, bytes] = {}
    for section, name in SETTINGS_FILES.items():
        path = home / name
        with contextlib.suppress(FileNotFoundError):
            raw = path.read_bytes()
            try:
                json.loads(raw)
            except ValueError:
                raise BackupError(f"{path} is not valid JSON; fix it, then back up again") from None
            files[section] = raw
    models: dict[str, Path] = {}
    if with_models:
        for name, model_path in sorted(settings.local_models.items()):
            p = Path(model_path)
            if not p.is_file():
                raise BackupError(
                    f"local model {name} points at {p}, which is missing: remove it with "
                    f"`jupyter byok local remove {name}`, or back up without --with-models"
                )
            models[name] = p
    ledger = ledger_path(home)
    ledger_size = sum(p.stat().st_size for p in (ledger, Path(f"{ledger}-wal")) if p.exists())
    model_size = sum(p.stat().st_size for p in models.values())
    _need_space(out.parent, ledger_size + model_size, "the backup", free)
    work = Path(tempfile.mkdtemp(prefix=".backup-", dir=ensure_private_dir(home)))
    try:
        _need_space(work, ledger_size, "the ledger snapshot", free)
        counts: dict[str, Any] = {
            "keys": len(entries),
            "ledger_rows": 0,
            "ledger_cost_pico": 0,
            "budgets": 0,
            "aliases": len(settings.aliases),
            "endpoints": len(settings.endpoints),
            "local_models": len(settings.local_models),
            "price_overrides": "prices" in files,
            "local_registry": "local_registry" in files,
            "model_files": len(models),
        }
        if "budgets" in files:
            counts["budgets"] = len(json.loads(files["budgets"]).get("budgets", []))
        snap = work / "ledger.sqlite3"
        if ledger.exists():
            counts.update({f"ledger_{k}": v for k, v in snapshot_ledger(ledger, snap).items()})
        with private_output(out, force=force) as f:
            writer = Writer(f, passphrase, kdf)
            key_list = []
            for n, (meta, secret) in enumerate(entries):
                section = f"k-{meta.get('id') or n}"
                body = json.dumps({**meta, "value": secret.reveal()}).encode("utf-8")
                writer.section(
                    section, iter([body]), kind="key", sha256=hashlib.sha256(body).hexdigest()
                )
                key_list.append(section)
                del body
            for section, raw in files.items():
                writer.section(
                    section, iter([raw]), kind=section, sha256=hashlib.sha256(raw).hexdigest()
                )
            if snap.exists():
                digest, size = _digest_file(snap)
                writer.section(
                    "ledger", _file_chunks(snap, True), kind="ledger", compression="zlib",
                    sha256=digest, bytes=size,
                )  # fmt: skip
            for n, (name, path) in enumerate(models.items()):
                digest, size = _digest_file(path)
                writer.section(
                    f"m-{n}", _file_chunks(path, False), kind="model", name=name,
                    path=str(path), sha256=digest, bytes=size,
                )  # fmt: skip
            manifest = {
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "machine": label or socket.gethostname(),
                "jupyter_byok": __version__,
                "counts": counts,
                "kdf": {"alg": "argon2id", "t": kdf.t, "m_kib": kdf.m_kib, "p": kdf.p},
            }
            writer.finish(manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**manifest, "path": str(out), "bytes": out.stat().st_size}
