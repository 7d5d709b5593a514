"""The backup file: a sealed container of sections, readable only with its passphrase.

Layout (the outer frame, magic and trailer, is the same in every format version, so that a
newer file is recognised as such and a damaged one as damaged)::

    MAGIC                                  20 bytes, "JUPYTER-BYOK-BACKUP\\n"
    u32 n, header (n bytes of JSON)        format, v, kdf {alg, t, m_kib, p, salt}, backup_id,
                                           check (tells a wrong passphrase from tampering)
    records, each:
      u32 n, descriptor (JSON)             {"s": section id, "i": chunk index, "last": bool}
      u32 n, nonce (12) + AES-256-GCM ciphertext and tag
    TRAILER_TAG + SHA-256 of every byte before it (32 bytes)

Every record is sealed under a key derived from the passphrase (Argon2id, parameters in
the header), with associated data binding it to the format version, the backup's random
id, the header's digest, its section id (a key's section id is its entry id), its chunk
index and whether it is the section's last chunk: records cannot be moved, dropped,
reordered or mixed between backups. The last record is the manifest (section
``manifest``): creation time, source machine label, counts, and per section its size,
chunk count and SHA-256. The unkeyed trailer digest is checked first, before the slow KDF,
so that accidental damage or truncation anywhere is reported as such and never as a wrong
passphrase; it adds no authenticity (the AEAD tags do that).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import ByokError

MAGIC = b"JUPYTER-BYOK-BACKUP\n"
FORMAT = "jupyter_byok.backup"
VERSION = 1
TRAILER_TAG = b"\nSHA256:"
TRAILER_LEN = len(TRAILER_TAG) + 32
CHUNK = 4 << 20
MAX_HEADER = 1 << 16
MAX_DESCRIPTOR = 1 << 12
MAX_RECORD = CHUNK + 12 + 16 + (1 << 10)  # zlib may grow an incompressible chunk a little


class BackupError(ByokError):
    """A backup could not be written or read (one line; nothing was changed)."""


class BackupCorruptError(BackupError):
    """Damaged, truncated or tampered with."""


class BackupPassphraseError(BackupError):
    """The passphrase does not open the backup."""


class BackupVersionError(BackupError):
    """Written by a newer jupyter_byok."""


class BackupSpaceError(BackupError):
    """Not enough free disk space."""


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost: ``t`` passes over ``m_kib`` KiB of memory with ``p`` lanes.

    The default takes about 0.6 s on a 2-core cloud VM (benchmarks/RESULTS.md); tests pass
    cheap parameters explicitly. A reader accepts what a file records, within bounds."""

    t: int = 2
    m_kib: int = 256 * 1024
    p: int = 1

    def check(self) -> KdfParams:
        if not (
            1 <= self.t <= 64
            and 8 * self.p <= self.m_kib <= 4 * 1024 * 1024
            and self.p in (1, 2, 4, 8)
        ):
            raise BackupCorruptError(
                f"the backup's key-derivation parameters are out of range (t={self.t}, "
                f"m={self.m_kib} KiB, p={self.p}): the file is damaged; nothing was changed"
            )
        return self


DEFAULT_KDF = KdfParams()


def derive(passphrase: str, salt: bytes, params: KdfParams) -> tuple[bytes, str]:
    """``(encryption key, check value)`` for a passphrase: Argon2id, then HKDF."""
    from argon2.low_level import Type, hash_secret_raw

    master = hash_secret_raw(
        passphrase.encode("utf-8"), salt, params.t, params.m_kib, params.p, 32, Type.ID
    )
    enc = HKDF(hashes.SHA256(), 32, salt=None, info=b"jupyter_byok/backup/enc").derive(master)
    chk = HKDF(hashes.SHA256(), 32, salt=None, info=b"jupyter_byok/backup/check").derive(master)
    return enc, hmac.new(chk, b"jupyter_byok/backup/check", hashlib.sha256).hexdigest()[:32]


def _aad(header_digest: bytes, backup_id: str, section: str, index: int, last: bool) -> bytes:
    out = bytearray()
    for item in (FORMAT, str(VERSION), backup_id, header_digest, section, str(index), str(last)):
        data = item if isinstance(item, bytes) else item.encode("utf-8")
        out += struct.pack(">I", len(data)) + data
    return bytes(out)


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


# ------------------------------------------------------------------------------ writing
class Writer:
    """Writes a backup to an open file; :meth:`section` seals one section in chunks."""

    def __init__(self, out: IO[bytes], passphrase: str, kdf: KdfParams = DEFAULT_KDF) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        salt = secrets.token_bytes(16)
        self._key, check = derive(passphrase, salt, kdf.check())
        self.backup_id = secrets.token_hex(16)
        header = {
            "format": FORMAT,
            "v": VERSION,
            "kdf": {
                "alg": "argon2id",
                "t": kdf.t,
                "m_kib": kdf.m_kib,
                "p": kdf.p,
                "salt": base64.b64encode(salt).decode("ascii"),
            },
            "backup_id": self.backup_id,
            "check": check,
        }
        raw = _dump(header)
        self._header_digest = hashlib.sha256(raw).digest()
        self._write(MAGIC + struct.pack(">I", len(raw)) + raw)
        self.sections: dict[str, dict[str, Any]] = {}
        self.bytes_written = 0

    def _write(self, data: bytes) -> None:
        self._hash.update(data)
        self._out.write(data)

    def _record(self, section: str, index: int, last: bool, plaintext: bytes) -> None:
        desc = _dump({"s": section, "i": index, "last": last})
        nonce = secrets.token_bytes(12)
        aad = _aad(self._header_digest, self.backup_id, section, index, last)
        sealed = nonce + AESGCM(self._key).encrypt(nonce, plaintext, aad)
        self._write(struct.pack(">I", len(desc)) + desc + struct.pack(">I", len(sealed)) + sealed)

    def section(self, section: str, pieces: Iterator[bytes], **info: Any) -> dict[str, Any]:
        """Seal ``pieces`` (each at most :data:`CHUNK` bytes) as ``section``; returns and
        records its manifest entry (``info`` plus chunks). ``info`` should carry the
        plaintext's ``sha256`` and ``bytes`` for the reader to check."""
        if section in self.sections or section == "manifest":
            raise ValueError(f"duplicate section {section}")
        index = 0
        pending: bytes | None = None
        for piece in pieces:
            if len(piece) > CHUNK + 1024:
                raise ValueError("chunk too large")
            if pending is not None:
                self._record(section, index, False, pending)
                index += 1
            pending = piece
        self._record(section, index, True, pending or b"")
        entry = {**info, "chunks": index + 1}
        self.sections[section] = entry
        return entry

    def finish(self, manifest: dict[str, Any]) -> None:
        """Seal the manifest (with the sections' entries) and write the trailer."""
        body = {**manifest, "format": FORMAT, "v": VERSION, "sections": self.sections}
        self._record("manifest", 0, True, _dump(body))
        digest = self._hash.digest()
        self._out.write(TRAILER_TAG + digest)


# ------------------------------------------------------------------------------ reading
@dataclass
class _Record:
    section: str
    index: int
    last: bool
    offset: int
    length: int


class Reader:
    """Reads and checks a backup: :func:`open_reader` checks the frame and the trailer
    digest, :meth:`unlock` the passphrase and the manifest; then :meth:`chunks` yields a
    section's plaintext, every chunk authenticated."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self._scan()
        except BaseException:
            self._file.close()
            raise
        self._key: bytes | None = None
        self.manifest: dict[str, Any] = {}

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _damaged(self, why: str) -> BackupCorruptError:
        return BackupCorruptError(
            f"{self.path} is damaged or truncated ({why}); nothing was changed: use another "
            "copy of the backup"
        )

    def _scan(self) -> None:
        f = self._file
        size = os.fstat(f.fileno()).st_size
        if f.read(len(MAGIC)) != MAGIC:
            raise BackupCorruptError(
                f"{self.path} is not a jupyter_byok backup (or its first bytes are damaged); "
                "nothing was changed"
            )
        if size < len(MAGIC) + 4 + TRAILER_LEN:
            raise self._damaged("too short")
        end = size - TRAILER_LEN
        f.seek(end)
        trailer = f.read(TRAILER_LEN)
        if not trailer.startswith(TRAILER_TAG):
            raise self._damaged("its end is missing")
        digest = hashlib.sha256()
        f.seek(0)
        left = end
        while left:
            block = f.read(min(left, 1 << 20))
            if not block:
                raise self._damaged("short read")
            digest.update(block)
            left -= len(block)
        if not hmac.compare_digest(digest.digest(), trailer[len(TRAILER_TAG) :]):
            raise self._damaged("checksum mismatch")
        # The bytes are as written; a file with a good checksum and a bad structure was
        # made so on purpose, and is refused just the same.
        f.seek(len(MAGIC))
        raw = self._take(4, end)
        (n,) = struct.unpack(">I", raw)
        if n > MAX_HEADER:
            raise self._damaged("header too large")
        header_raw = self._take(n, end)
        try:
            header = json.loads(header_raw)
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise ValueError
            version = header["v"]
            if not isinstance(version, int):
                raise ValueError
        except (ValueError, KeyError):
            raise self._damaged("unreadable header") from None
        if version > VERSION:
            raise BackupVersionError(
                f"{self.path} was written by a newer jupyter_byok (backup format {version}; this "
                f"one reads format {VERSION} and older); nothing was changed: upgrade "
                "jupyter_byok (pip install -U jupyter_byok) and restore again"
            )
        if version != VERSION:
            raise self._damaged(f"unknown format version {version!r}")
        try:
            kdf = header["kdf"]
            if kdf["alg"] != "argon2id":
                raise ValueError
            self.kdf = KdfParams(int(kdf["t"]), int(kdf["m_kib"]), int(kdf["p"]))
            self._salt = base64.b64decode(kdf["salt"], validate=True)
            self.backup_id = str(header["backup_id"])
            self._check = str(header["check"])
        except (KeyError, TypeError, ValueError):
            raise self._damaged("malformed header") from None
        self.kdf.check()
        self.header = header
        self._header_digest = hashlib.sha256(header_raw).digest()
        records: list[_Record] = []
        while f.tell() < end:
            (n,) = struct.unpack(">I", self._take(4, end))
            if n > MAX_DESCRIPTOR:
                raise self._damaged("record descriptor too large")
            try:
                desc = json.loads(self._take(n, end))
                rec = _Record(str(desc["s"]), int(desc["i"]), desc["last"] is True, 0, 0)
            except (ValueError, KeyError, TypeError):
                raise self._damaged("malformed record") from None
            (n,) = struct.unpack(">I", self._take(4, end))
            if not 28 <= n <= MAX_RECORD:
                raise self._damaged("malformed record length")
            rec.offset, rec.length = f.tell(), n
            f.seek(n, os.SEEK_CUR)
            if f.tell() > end:
                raise self._damaged("record past the end")
            records.append(rec)
        if not records or records[-1].section != "manifest":
            raise self._damaged("no manifest")
        self._records: dict[str, list[_Record]] = {}
        for rec in records:
            chunks = self._records.setdefault(rec.section, [])
            if rec.index != len(chunks) or (chunks and chunks[-1].last):
                raise self._damaged(f"records of section {rec.section} out of order")
            chunks.append(rec)
        for section, chunks in self._records.items():
            if not chunks[-1].last:
                raise self._damaged(f"section {section} incomplete")

    def _take(self, n: int, end: int) -> bytes:
        if self._file.tell() + n > end:
            raise self._damaged("a record runs past the end")
        data = self._file.read(n)
        if len(data) != n:
            raise self._damaged("short read")
        return data

    def unlock(self, passphrase: str) -> dict[str, Any]:
        """Derive the key (the KDF's cost, once), check it and open the manifest."""
        key, check = derive(passphrase, self._salt, self.kdf)
        if not hmac.compare_digest(check, self._check):
            raise BackupPassphraseError(f"wrong passphrase for {self.path}; nothing was changed")
        self._key = key
        raw = b"".join(self.chunks("manifest"))
        try:
            manifest = json.loads(raw)
            sections = manifest["sections"]
            if not isinstance(sections, dict) or manifest.get("v") != VERSION:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise self._damaged("unreadable manifest") from None
        listed = set(sections) | {"manifest"}
        if listed != set(self._records):
            raise self._damaged("the sections do not match the manifest")
        for name, entry in sections.items():
            if not isinstance(entry, dict) or entry.get("chunks") != len(self._records[name]):
                raise self._damaged(f"section {name} does not match the manifest")
        self.manifest = manifest
        return manifest

    def chunks(self, section: str) -> Iterator[bytes]:
        """The section's plaintext chunks, each authenticated before it is yielded."""
        assert self._key is not None, "unlock() first"
        aes = AESGCM(self._key)
        for rec in self._records[section]:
            self._file.seek(rec.offset)
            sealed = self._file.read(rec.length)
            aad = _aad(self._header_digest, self.backup_id, section, rec.index, rec.last)
            try:
                yield aes.decrypt(sealed[:12], sealed[12:], aad)
            except InvalidTag:
                raise BackupCorruptError(
                    f"{self.path} was altered (section {section} failed authentication); "
                    "nothing was changed: use another copy of the backup"
                ) from None

    def read(self, section: str) -> bytes:
        """A small section whole, checked against the manifest's digest."""
        data = b"".join(self.chunks(section))
        entry = self.manifest["sections"][section]
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise self._damaged(f"section {section} digest mismatch")
        return data


def open_reader(path: Path) -> Reader:
    try:
        return Reader(path)
    except FileNotFoundError:
        raise BackupError(f"no backup at {path}: check the path") from None
    except IsADirectoryError:
        raise BackupError(f"{path} is a folder, not a backup file") from None
    except PermissionError:
        raise BackupError(f"cannot read {path}: permission denied") from None


@contextlib.contextmanager
def private_output(dest: Path, *, force: bool = False) -> Iterator[IO[bytes]]:
    """A 0600 temp file beside ``dest``, moved onto it (atomically) only if the block
    completes; removed otherwise."""
    if dest.exists() and not force:
        raise BackupError(f"{dest} already exists: choose another name, or pass --force")
    if not dest.parent.is_dir():
        raise BackupError(f"the folder {dest.parent} does not exist")
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
