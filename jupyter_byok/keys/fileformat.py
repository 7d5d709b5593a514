"""The keystore's on-disk format: layout, checksums, and the associated data of each seal.

File layout: ``<compact JSON body>\nsha256:<hex>\nhmac-sha256:<hex>\n``. The unkeyed
SHA-256 of the body is checked first (accidental damage is reported as corruption, never as
"another machine"); the HMAC under a data-key subkey authenticates the exact bytes. The
associated data (AAD) binds the wrapped data key to its header, and each entry to (format
version, data key id, provider, name, kind, base URL), with a length-prefixed encoding
(:func:`encode_aad`) so no two field tuples share an encoding.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["FORMAT", "VERSION", "encode_aad", "serialize", "split"]

FORMAT = "jupyter_byok.keystore"
VERSION = 1
MAC_PREFIX = b"hmac-sha256:"
DIGEST_PREFIX = b"sha256:"
KEK_FILE_RE = re.compile(r"^kek/kek-[0-9a-f]{12}\.key$")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(text.encode("ascii"), validate=True)


def hkdf(ikm: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    """HKDF-SHA256 to 32 bytes (the file-MAC and fingerprint subkeys, the KEK)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def encode_aad(*fields: str | bytes) -> bytes:
    """Length-prefixed encoding: no two field tuples share an encoding."""
    out = bytearray()
    for item in fields:
        data = item.encode("utf-8") if isinstance(item, str) else item
        out += struct.pack(">I", len(data)) + data
    return bytes(out)


@dataclass
class Store:
    header: dict[str, Any]
    entries: list[dict[str, Any]]
    dek: bytes = field(repr=False)


class Corrupt(Exception):
    """The file failed a structural or integrity check (reported as KeystoreCorruptError)."""


def split(raw: bytes) -> tuple[bytes, bytes]:
    """``(body, mac)`` of a keystore file, after checking the unkeyed body checksum.

    Files written before the checksum line existed (body + MAC line only) are still read;
    the next write adds the line.
    """
    if raw[-1:] != b"\n":
        raise Corrupt("missing checksum line (truncated?)")
    lines = raw[:-1].split(b"\n")
    if len(lines) == 3:
        body, digest, mac = lines
        if not digest.startswith(DIGEST_PREFIX):
            raise Corrupt("missing checksum line (truncated?)")
        if not hmac.compare_digest(digest[len(DIGEST_PREFIX) :], _digest(body)):
            raise Corrupt("checksum mismatch: the file was damaged")
    elif len(lines) == 2:
        body, mac = lines
    else:
        raise Corrupt("missing checksum line (truncated?)")
    if not mac.startswith(MAC_PREFIX):
        raise Corrupt("missing checksum line (truncated?)")
    return body, mac[len(MAC_PREFIX) :]


def _digest(body: bytes) -> bytes:
    return hashlib.sha256(body).hexdigest().encode("ascii")


def check_header(header: dict[str, Any]) -> None:
    """Structural checks before any field is used (a tampered field never escapes as a
    ``KeyError``, and ``kek_file`` can only name a file inside ``kek/``)."""
    for key in ("kid", "tier", "salt", "kek_check"):
        if not isinstance(header.get(key), str):
            raise Corrupt(f"malformed header field {key!r}")
    for key in ("kek_file", "keyring_user", "machine_hint"):
        if not isinstance(header.get(key), (str, type(None))):
            raise Corrupt(f"malformed header field {key!r}")
    kek_file = header.get("kek_file")
    if header["tier"] in ("machine-file", "file") and not (
        isinstance(kek_file, str) and KEK_FILE_RE.match(kek_file)
    ):
        raise Corrupt("malformed header field 'kek_file'")
    if not isinstance(header.get("wrapped_dek"), dict):
        raise Corrupt("missing or malformed data key")


def mac(dek: bytes, body: bytes) -> bytes:
    key = hkdf(dek, b"jupyter_byok/file-mac")
    return hmac.new(key, body, hashlib.sha256).hexdigest().encode("ascii")


def kek_check(kek: bytes) -> str:
    return hmac.new(kek, b"jupyter_byok/kek-check", hashlib.sha256).hexdigest()[:16]


def dek_aad(header: dict[str, Any]) -> bytes:
    return encode_aad(
        "jupyter_byok.dek",
        str(VERSION),
        str(header["kid"]),
        str(header["tier"]),
        str(header["salt"]),
        str(header.get("kek_file") or ""),
        str(header.get("keyring_user") or ""),
        str(header.get("machine_hint") or ""),
    )


def entry_aad(header: dict[str, Any], entry: dict[str, Any]) -> bytes:
    return encode_aad(
        "jupyter_byok.entry",
        str(VERSION),
        str(header["kid"]),
        str(entry["provider"]),
        str(entry["name"]),
        str(entry.get("kind") or "provider"),
        str(entry.get("base_url") or ""),
    )


def serialize(store: Store) -> bytes:
    """The file's bytes for ``store``: body, checksum line, MAC line."""
    doc = {"format": FORMAT, "v": VERSION, "header": store.header, "entries": store.entries}
    body = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return (
        body
        + b"\n"
        + DIGEST_PREFIX
        + _digest(body)
        + b"\n"
        + MAC_PREFIX
        + mac(store.dek, body)
        + b"\n"
    )
